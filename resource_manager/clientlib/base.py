"""The part of ResourceManagerClient (client.py) its mixins (original.py, alloc.py, tokens.py) call.

Declared for the type checker only: at run time ClientBase is an empty class, and the client
defines every method named here.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests
    from typing_extensions import Self

# A JSON object as the API sends and takes it (an item, a reservation, a token...).
Document = dict[str, Any]
# Query parameters of a request: requests leaves out those that are None.
Params = Mapping[str, Any]
# Called back by reserve(wait=) while it waits in line, with the reservation as it stands.
Progress = Callable[[Document], object]


class ClientBase:
    """The attributes and methods of ResourceManagerClient that its mixins use."""

    resource_type: str
    key: str
    username: str | None
    timeout: float
    fields: builtins.list[str]
    retry_time: float

    if TYPE_CHECKING:
        def request(self, method: str, path: str, *, params: Params | None = None, json: Any = None,
                    headers: Mapping[str, str] | None = None, timeout: float | None = None) -> requests.Response: ...

        def call(self, method: str, path: str, *, params: Params | None = None, json: Any = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Any: ...

        @staticmethod
        def body_of(response: requests.Response) -> Any: ...

        def item_path(self, name: object, resource_type: str | None = None) -> str: ...

        def get(self, name: object) -> Document: ...

        def iter(self, where: Mapping[str, Any] | str | None = None, sort: str | None = None,
                 fields: builtins.list[str] | str | None = None, page_size: int = 1000, limit: int | None = None,
                 path: str | None = None) -> Iterator[Document]: ...

        def list(self, where: Mapping[str, Any] | str | None = None, sort: str | None = None,
                 fields: builtins.list[str] | str | None = None, limit: int | None = None) -> builtins.list[Document]:
            ...

        def write_item(self, method: str, path: str, body: Mapping[str, Any] | None, etag: str,
                       reason: str | None = None) -> Document | None: ...

        def delete(self, name: object, etag: str | None = None, reason: str | None = None) -> None: ...

        def clone(self, *, timeout: float | None = None, retry_time: float | None = None) -> Self: ...

        def close(self) -> None: ...
