"""Generated parts of hand-written pages: the text between a pair of markers."""

import re


def start(name):
    return f"<!-- generated:{name}:start -->"


def end(name):
    return f"<!-- generated:{name}:end -->"


def replace(text, name, body):
    """Return `text` with the part between the markers `name` replaced by `body`. Raises KeyError without them."""
    pattern = re.compile(re.escape(start(name)) + r"\n.*?" + re.escape(end(name)), re.S)
    if not pattern.search(text):
        raise KeyError(f"no markers {start(name)} ... {end(name)}")
    note = "<!-- written by `python -m docgen` (make docs) from the code: edit the code or docgen/, not this part -->\n"
    return pattern.sub(lambda _m: f"{start(name)}\n{note}{body.rstrip()}\n{end(name)}", text, count=1)


def names(text):
    """Return the names of the generated parts of `text`."""
    return re.findall(r"<!-- generated:([\w-]+):start -->", text)
