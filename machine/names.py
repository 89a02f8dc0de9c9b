"""Names that come from outside the code — read from a file (``zoo.json``, ``figures/captions.json``,
``summary.json``) or returned by another process (a Ray worker) — checked before they become paths.

Such a name is joined to a folder (``zoo / name``, ``figures / f"{name}.png"``, ``out / name``); a name
``"/etc"`` replaces the folder, ``"../x"`` climbs out of it, ``""`` or ``"."`` is the folder itself. So
every such name must be exactly *one path component*: :func:`path_component` is the one check, used
wherever such a name is joined to a path; :func:`relative_file` applies it to every component of a
relative file path (the files a worker sends back). Both raise ``ValueError`` with one line naming where
the name came from.
"""

from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["path_component", "relative_file", "unique_components"]

MAX_COMPONENT_BYTES = 255  # NAME_MAX of Linux file systems


def path_component(name: object, where: str) -> str:
    """``name`` if it is one path component — a non-empty ``str`` without ``/``, ``\\`` or NUL, not
    ``.`` or ``..``, at most 255 bytes in UTF-8, no leading or trailing white space — else
    ``ValueError("<where>: <repr> is not a plain folder or file name (...)")``."""
    reason = None
    if not isinstance(name, str):
        reason = f"a {type(name).__name__}, not a string"
    elif not name:
        reason = "empty"
    elif name in (".", ".."):
        reason = "the folder itself or its parent"
    elif "/" in name or "\\" in name:
        reason = "holds a path separator"
    elif "\0" in name:
        reason = "holds a NUL byte"
    elif name != name.strip():
        reason = "begins or ends with white space"
    else:
        try:
            encoded = name.encode("utf-8")
        except UnicodeEncodeError:
            reason = "not valid UTF-8"
        else:
            if len(encoded) > MAX_COMPONENT_BYTES:
                reason = f"longer than {MAX_COMPONENT_BYTES} bytes"
    if reason is not None:
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise ValueError(f"{where}: {shown} is not a plain folder or file name ({reason})")
    return name


def relative_file(path: object, where: str) -> str:
    """``path`` if it is a relative POSIX path whose every component passes :func:`path_component`
    (``a/b.txt`` yes; ``/a``, ``a/../b``, ``a//b``, ``a/`` no), else ``ValueError``."""
    if not isinstance(path, str) or not path:
        return path_component(path, where)  # raises with the reason
    parts = path.split("/")
    for part in parts:
        try:
            path_component(part, where)
        except ValueError:
            shown = repr(path) if len(repr(path)) <= 80 else repr(path)[:77] + "..."
            raise ValueError(f"{where}: {shown} is not a relative file path inside the folder") from None
    return str(PurePosixPath(*parts))


def unique_components(names: list[object], where: str) -> list[str]:
    """Every name checked by :func:`path_component`, and none twice (a list read from a file that
    names a run twice would count it twice): ``ValueError`` naming the first repeated one."""
    seen: set[str] = set()
    for name in names:
        checked = path_component(name, where)
        if checked in seen:
            raise ValueError(f"{where}: {checked!r} is listed twice")
        seen.add(checked)
    return [str(n) for n in names]


def output_path_problem(path: object) -> str | None:
    """Why ``path`` cannot be an output folder's path, checked before any work (None when it can):
    empty; not valid UTF-8 (bytes the terminal could not decode: the path could be created but not
    recorded in a JSON file or shown); a symlink whose target does not exist, or a symlink loop (the
    output would be written through it, or fail only at the end)."""
    import errno
    import os

    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    if not isinstance(text, str) or not text.strip():
        return "is empty: name the output folder"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return f"{shown!r} is not valid UTF-8: name the output folder in UTF-8"
    probe = os.path.expanduser(text)
    while True:  # the path and each parent that exists as a link
        if os.path.islink(probe):
            try:
                os.stat(probe)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return f"{probe} is a symlink loop"
                return f"{probe} is a symlink to {os.readlink(probe)}, which does not exist"
        parent = os.path.dirname(probe.rstrip("/")) or "."
        if parent == probe or parent in (".", "/"):
            return None
        probe = parent
