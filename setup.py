from setuptools import find_packages, setup

from resource_manager import __version__

setup(
    name="resource-manager",
    version=__version__,
    description="Track and hand out lab and datacenter machines and IP addresses, race-free",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(exclude=["tests", "tests.*", "bench"]),
    package_data={
        "resource_manager": ["web/templates/**/*", "web/static/**/*"],
        "resource_manager.localdb": ["main.go", "go.mod", "go.sum"],
    },
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "Eve>=2.3,<3",
        "Flask>=3.0,<4",
        "pymongo>=4.6,<5",
        "requests>=2.31,<3",
        "prettytable>=3.9,<4",
        "Bootstrap-Flask>=2.4,<3",
        "Flask-WTF>=1.2,<2",
    ],
    extras_require={"server": ["gunicorn>=22"]},
    entry_points={
        "console_scripts": [
            "rmctl=resource_manager.cli:main",
            "rm-server=resource_manager.server:main",
            "rm-users=resource_manager.users:main",
            "rm-sweep=resource_manager.sweep:main",
            "rm-check=resource_manager.check:main",
        ],
    },
)
