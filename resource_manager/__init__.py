"""ResourceManager: track and hand out lab and datacenter resources."""

__version__ = "1.0.0"
