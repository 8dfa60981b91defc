"""Where catalog entries come from: directories of modules and git checkouts, read from disk.

A source is a directory (for a git repository the operator names: its checkout, see
``agora.catalog.git``). If it holds a metadata file itself it is one module (a module's own
repository); otherwise each sub-directory holding one is a module, named after the
sub-directory. A module inside a git work tree records the commit it was read at. Reading never
stops at a bad file: each file yields an entry or its problems.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from agora.catalog.git import Remote
from agora.catalog.metadata import MetadataError, ModuleSpec, Problem, parse

#: Looked for in this order; the first found is the module's metadata.
METADATA_FILES = ("ai4-metadata.yml", "ai4-metadata.yaml", "ai4-metadata.json", "metadata.json")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "examples"
MAX_FILE_BYTES = 1_048_576
GIT_TIMEOUT = 10.0

SourceKind = Literal["builtin", "directory", "git"]


@dataclass(frozen=True)
class Source:
    path: Path
    kind: SourceKind
    #: The repository a "git" source is cloned from and fetched before each import; None for a
    #: checkout the operator keeps current.
    remote: Remote | None = None

    @property
    def label(self) -> str:
        if self.remote is not None:
            return self.remote.shown
        return "builtin" if self.kind == "builtin" else str(self.path)

    def commit(self) -> str | None:
        """The commit the checkout is at (the one the last import read)."""
        return _git_commit(self.path) if self.kind == "git" else None


@dataclass
class FileResult:
    """What one metadata file gave: an entry, or the problems that kept it out."""

    file: str
    source: Source
    spec: ModuleSpec | None = None
    #: The parsed document, stored with the entry.
    document: Any = None
    commit: str | None = None
    problems: list[Problem] = field(default_factory=list)


def configured(
    catalog_dirs: list[Path],
    *,
    builtin: bool,
    remotes: Sequence[Remote] = (),
    checkouts: Path | None = None,
) -> list[Source]:
    """The built-in examples, the directories, then the repositories (checked out in
    ``checkouts``)."""
    sources = [Source(BUILTIN_DIR, "builtin")] if builtin and BUILTIN_DIR.is_dir() else []
    for path in catalog_dirs:
        path = path.expanduser().resolve()
        sources.append(Source(path, "git" if _git_commit(path) else "directory"))
    for remote in remotes:
        assert checkouts is not None, "repositories need a folder for their checkouts"
        sources.append(Source(checkouts / remote.checkout_name, "git", remote))
    return sources


def metadata_file(directory: Path) -> Path | None:
    for name in METADATA_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def scan(source: Source) -> list[FileResult]:
    """Every module of a source, in name order; a missing source is one problem."""
    if not source.path.is_dir():
        problem = Problem(str(source.path), "", "the catalog directory does not exist")
        return [FileResult(str(source.path), source, problems=[problem])]
    own = metadata_file(source.path)
    if own is not None:
        return [read_module(source, source.path, own)]
    results = []
    for child in sorted(p for p in source.path.iterdir() if p.is_dir()):
        found = metadata_file(child)
        if found is not None and not child.name.startswith("."):
            results.append(read_module(source, child, found))
    return results


def default_name(directory: Path) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", directory.name.lower()).strip("-._")[:64]


def read_module(source: Source, directory: Path, path: Path) -> FileResult:
    shown = _shown(source, path)
    result = FileResult(shown, source)
    # A repository Agora clones is a module named after it, not after its checkout's folder.
    remote = source.remote
    name = (
        remote.name if remote is not None and directory == source.path else default_name(directory)
    )
    try:
        result.document = load_document(path.read_bytes(), path.name, shown)
        result.spec = parse(result.document, file=shown, name=name)
    except MetadataError as exc:
        result.problems = exc.problems
        return result
    except OSError as exc:
        result.problems = [Problem(shown, "", f"cannot be read: {exc.strerror or exc}")]
        return result
    if source.kind == "git":
        result.commit = _git_commit(directory)
    return result


def load_document(raw: bytes, filename: str, shown: str) -> Any:
    """A metadata file's content (YAML or JSON by its name), or MetadataError."""
    if len(raw) > MAX_FILE_BYTES:
        raise MetadataError([Problem(shown, "", f"larger than {MAX_FILE_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
        if filename.endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise MetadataError([Problem(shown, "", "not UTF-8 text")]) from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise MetadataError([Problem(shown, "", f"not valid JSON ({where}): {exc.msg}")]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise MetadataError([Problem(shown, "", f"not valid YAML{where}")]) from exc


def _shown(source: Source, path: Path) -> str:
    """The file as problems name it: relative to its source (plus the source's own name)."""
    base = source.path if source.kind == "builtin" else source.path.parent
    try:
        shown = path.relative_to(base)
    except ValueError:
        return str(path)
    if source.remote is not None:  # the repository's name, not its checkout's folder
        shown = Path(source.remote.name, *shown.parts[1:])
    return str(shown)


def _git_commit(directory: Path) -> str | None:
    """HEAD of the git work tree the directory is in, if it is in one."""
    git = shutil.which("git")
    if git is None or not directory.is_dir():
        return None
    try:
        done = subprocess.run(  # noqa: S603 - an argument list, no shell
            [git, "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None
