"""Folders a service may read files from, given by the operator at start (--allow-dir, --lora-dir).

A path from a request is resolved first (symlinks followed, `..` collapsed, relative paths taken from the
service's working directory) and only then compared with the roots, which are resolved the same way at start:
`output/../../etc/passwd` and a symlink inside a root that points out of it are both outside.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence


class OutsideRoots(Exception):
    """A request named a file outside the allowed folders (the service answers 403)."""


class AllowedRoots:
    def __init__(self, roots: Iterable[str | os.PathLike], flag: str):
        self.flag = flag
        self.roots = [Path(os.path.realpath(os.path.expanduser(str(root)))) for root in roots]

    def __iter__(self):
        return iter(self.roots)

    def __str__(self) -> str:
        return ", ".join(str(root) for root in self.roots) or "(none)"

    def contains(self, path: str | os.PathLike) -> Optional[Path]:
        """The resolved path when it lies inside a root, else None."""
        real = Path(os.path.realpath(os.path.expanduser(str(path))))
        for root in self.roots:
            if real == root or root in real.parents:
                return real
        return None

    def check(self, path: str | os.PathLike, field: str) -> Path:
        """The resolved path, or OutsideRoots with a message that names the path, the roots and the flag."""
        real = self.contains(path)
        if real is None:
            shown = str(path)
            resolved = os.path.realpath(os.path.expanduser(shown))
            where = f" (resolves to {resolved})" if resolved != shown else ""
            raise OutsideRoots(f"{field}: {shown}{where} is outside the folders this service may read ({self}); "
                               f"start the service with {self.flag} DIR to allow another folder")
        return real

    def find(self, name: str, suffixes: Sequence[str] = (), field: str = "path") -> Optional[Path]:
        """A file given by absolute path (checked) or by a name relative to each root (first hit), with each suffix
        tried when the name has none. None when no such file exists; OutsideRoots when it escapes the roots."""
        given = Path(os.path.expanduser(name))
        bases = [given] if given.is_absolute() else [root / given for root in self.roots]
        candidates = list(bases)
        if not given.suffix:
            candidates += [base.with_name(base.name + suffix) for base in bases for suffix in suffixes]
        for candidate in candidates:
            if candidate.is_file():
                return self.check(candidate, field)
        # A path that leaves the roots is refused even when nothing is there (no probing outside the roots).
        if given.is_absolute():
            self.check(given, field)
        elif ".." in given.parts and not any(self.contains(base) for base in bases):
            self.check(bases[0], field)
        return None

    def candidates(self, name: str, suffixes: Sequence[str] = ()) -> list[str]:
        given = Path(os.path.expanduser(name))
        bases = [given] if given.is_absolute() else [root / given for root in self.roots]
        if not given.suffix:
            bases += [base.with_name(base.name + suffix) for base in list(bases) for suffix in suffixes]
        return [str(base) for base in bases]
