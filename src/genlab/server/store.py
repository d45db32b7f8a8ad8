"""The models a server offers: every run directory under one root, loaded on first use, kept in a bounded LRU.

A model is named by its run directory's path relative to the root ("lm/shakespeare"). Names are checked before
any file is touched: no absolute paths, no "..", nothing that resolves (symbolic links included) outside the root.
"""

import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Any

from genlab import api
from genlab.checkpoint import CONFIG
from genlab.errors import GenlabError

MAX_DEPTH = 4  # run directories are looked for this many levels below the root


class UnknownModelError(GenlabError):
    """A model name that is not a run directory under the server's root (HTTP 404)."""


class ModelStore:
    def __init__(self, root: str | Path, capacity: int = 4, device: str = "auto"):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise GenlabError(f"{root} is not a directory; give the folder that holds your run directories")
        self.capacity, self.device = max(1, capacity), device
        self._loaded: OrderedDict[str, tuple[float, Any]] = OrderedDict()  # name -> (config mtime, model)
        self._lock = threading.Lock()  # one load at a time; the LRU's order changes under it

    def names(self) -> list[str]:
        """Every run directory under the root (a folder with config.json), as relative POSIX paths, sorted."""
        names = set()
        for depth in range(MAX_DEPTH + 1):
            for config in self.root.glob("/".join(["*"] * depth + [CONFIG])):
                rel = config.parent.relative_to(self.root)
                if any(part.startswith(".") for part in rel.parts):
                    continue  # hidden folders are not offered
                try:
                    names.add(self.name_of(self.resolve(rel.as_posix())))
                except UnknownModelError:
                    continue  # a link that leads outside the root
        return sorted(names)

    def name_of(self, path: Path) -> str:
        rel = path.relative_to(self.root).as_posix()
        return rel if rel != "." else "."

    def resolve(self, name: str) -> Path:
        """The run directory named `name`, or UnknownModelError; never a path outside the root."""
        if not isinstance(name, str) or not name or "\x00" in name or "\\" in name or len(name) > 1024:
            raise UnknownModelError(f"{name!r} is not a model name; names are paths relative to the served folder, "
                                    "as GET /v1/models lists them")
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise UnknownModelError(f"model {name!r}: names are paths inside the served folder, without '..' or a "
                                    "leading '/'")
        try:
            path = (self.root / rel).resolve()
            found = path.is_relative_to(self.root) and (path / CONFIG).is_file()
        except OSError:  # e.g. a name too long for the file system
            found = False
        if not found:
            raise UnknownModelError(f"no model {name!r} here; GET /v1/models lists the models this server offers")
        return path

    def card(self, name: str) -> dict[str, Any]:
        """What GET /v1/models shows of one model: api.describe's card, its name, whether it is loaded."""
        path = self.resolve(name)
        return {"name": self.name_of(path), **api.describe(path), "loaded": self.name_of(path) in self._loaded}

    def get(self, name: str) -> Any:
        """The loaded model `name`, loading it (and dropping the least recently used beyond capacity) if needed.
        A run retrained since it was loaded (newer config.json) is loaded again; a deleted one is forgotten."""
        try:
            path = self.resolve(name)
        except UnknownModelError:
            with self._lock:
                self._loaded.pop(name, None)  # its directory is gone: free its memory
            raise
        key = self.name_of(path)
        with self._lock:
            mtime = (path / CONFIG).stat().st_mtime
            entry = self._loaded.get(key)
            if entry is not None and entry[0] == mtime:
                self._loaded.move_to_end(key)
                return entry[1]
            model = api.load(path, device=self.device)
            self._loaded[key] = (mtime, model)
            self._loaded.move_to_end(key)
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return model

    def loaded(self) -> list[str]:
        return list(self._loaded)
