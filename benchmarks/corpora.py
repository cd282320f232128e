"""Benchmark corpora built deterministically from real files on this machine, cached with a manifest."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

CORPUS_SIZE = 80 * 2**20  # 20 chunks of the default 4 MiB, so no corpus ends in a short chunk
CORPORA_DIR = Path(__file__).resolve().parent / "corpora"

# One piece of a corpus: the file it came from and its bytes (decompressed for man pages).
Piece = tuple[str, bytes]


def _multiarch_lib_dir() -> Path:
    return Path("/usr/lib") / (sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu")


def _site_packages_dirs() -> list[Path]:
    """The running interpreter's site-packages and, when in a venv, the base interpreter's."""
    dirs = [sysconfig.get_paths()["purelib"]]
    base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    dirs.append(base["purelib"])
    return [Path(d) for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def unique_regular_files(paths: Iterable[Path]) -> list[Path]:
    """Regular files in sorted path order, each real file once (symlinked duplicates dropped)."""
    seen: set[str] = set()
    unique: list[Path] = []
    for path in sorted(set(paths), key=str):
        try:
            if not path.is_file():
                continue
            real = os.path.realpath(path)
        except OSError:
            continue
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def find_files(root: Path, suffix: str, exclude_dir: str | None = None) -> list[Path]:
    """Files under `root` whose name ends in `suffix`, sorted; skips `exclude_dir` subtrees."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if exclude_dir is not None:
            dirnames[:] = [d for d in dirnames if d != exclude_dir]
        found.extend(Path(dirpath) / name for name in filenames if name.endswith(suffix))
    return unique_regular_files(found)


def python_source_paths() -> list[Path]:
    """The standard library's .py files, then site-packages' .py files (each group sorted)."""
    stdlib = find_files(Path(sysconfig.get_paths()["stdlib"]), ".py", exclude_dir="site-packages")
    site = [p for d in _site_packages_dirs()[:1] for p in find_files(d, ".py")]
    return stdlib + site


def shared_library_paths() -> list[Path]:
    """/usr/lib/<multiarch>/*.so* (top level), sorted, symlinks to the same file once."""
    return unique_regular_files(_multiarch_lib_dir().glob("*.so*"))


def man_page_paths() -> list[Path]:
    return find_files(Path("/usr/share/man"), ".gz")


def json_paths() -> list[Path]:
    """JSON files from Python's site-packages, /usr/share and /usr/lib, sorted by path."""
    roots = [*_site_packages_dirs(), Path("/usr/share"), Path("/usr/lib")]
    return unique_regular_files(p for root in roots if root.is_dir() for p in find_files(root, ".json"))


def _first_dir(*candidates: str) -> Path | None:
    """The first of `candidates` that is a directory (tools live in different places per install)."""
    return next((Path(c) for c in candidates if Path(c).is_dir()), None)


def _node_modules_dir() -> Path | None:
    return _first_dir("/usr/lib/node_modules", "/usr/local/lib/node_modules")


def _gcloud_sdk_dir() -> Path | None:
    return _first_dir("/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/opt/google-cloud-sdk")


def _under(root: Path | None, suffix: str, exclude_dir: str | None = None) -> list[Path]:
    """find_files, or nothing when `root` is absent: a corpus source that is missing just drops out."""
    return find_files(root, suffix, exclude_dir) if root is not None and root.is_dir() else []


def source_groups() -> list[list[Path]]:
    """Sources of projects other than the `text` corpus's: the Google Cloud SDK's Python, the base
    interpreter's site-packages (not the venv's), and npm's JavaScript, each group sorted."""
    return [_under(_gcloud_sdk_dir(), ".py"),
            [p for d in _site_packages_dirs()[1:] for p in find_files(d, ".py")],
            _under(_node_modules_dir(), ".js")]


def json_groups() -> list[list[Path]]:
    """JSON files by origin, each group sorted: the Google Cloud SDK, Python's site-packages, npm,
    and the rest of /usr/share; a file is listed in the first group that holds it."""
    return once_each([_under(_gcloud_sdk_dir(), ".json"),
                      [p for d in _site_packages_dirs() for p in find_files(d, ".json")],
                      _under(_node_modules_dir(), ".json"),
                      _under(Path("/usr/share"), ".json")])


def once_each(groups: list[list[Path]]) -> list[list[Path]]:
    """The groups with every real file kept only in the first group that lists it."""
    seen: set[str] = set()
    unique = []
    for group in groups:
        kept = []
        for path in group:
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                kept.append(path)
        unique.append(kept)
    return unique


def read_pieces(paths: Iterable[Path], decode: Callable[[bytes], bytes] = bytes,
                max_bytes_per_file: int | None = None) -> Iterator[Piece]:
    """Yields (path, bytes) for each readable path, at most `max_bytes_per_file` bytes of each;
    unreadable or undecodable files are skipped."""
    for path in paths:
        try:
            data = decode(path.read_bytes())
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error):
            continue
        if data:
            yield str(path), data[:max_bytes_per_file]


def interleave(sources: list[Iterator[Piece]]) -> Iterator[Piece]:
    """Merges sources so each has contributed about the same number of bytes at every point:
    the next piece always comes from the source that has given the fewest bytes so far."""
    given = [0] * len(sources)
    live = list(range(len(sources)))
    while live:
        index = min(live, key=lambda i: (given[i], i))
        piece = next(sources[index], None)
        if piece is None:
            live.remove(index)
            continue
        given[index] += len(piece[1])
        yield piece


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    description: str
    pieces: Callable[[], Iterator[Piece]]


def text_pieces() -> Iterator[Piece]:
    return read_pieces(python_source_paths())


# Without a cap the binary corpus would be 96% libLLVM (the first big file in sorted order); with
# 2 MiB per library it draws on ~260 libraries.
MAX_LIBRARY_BYTES = 2 * 2**20


def binary_pieces() -> Iterator[Piece]:
    return read_pieces(shared_library_paths(), max_bytes_per_file=MAX_LIBRARY_BYTES)


def mixed_pieces() -> Iterator[Piece]:
    return interleave([read_pieces(man_page_paths(), gzip.decompress), read_pieces(json_paths())])


def machine_mix_pieces() -> Iterator[Piece]:
    """All four kinds of file interleaved: the real-data input of the end-to-end benchmark."""
    # Whole libraries here: the 1 GiB needs more bytes than the capped libraries hold.
    return interleave([text_pieces(), read_pieces(shared_library_paths()),
                       read_pieces(man_page_paths(), gzip.decompress), read_pieces(json_paths())])


def source_pieces() -> Iterator[Piece]:
    return interleave([read_pieces(group) for group in source_groups()])


def json_pieces() -> Iterator[Piece]:
    return interleave([read_pieces(group) for group in json_groups()])


def _gunzip_if_gz(path: Path) -> Callable[[bytes], bytes]:
    return gzip.decompress if path.name.endswith(".gz") else bytes


def read_maybe_gzipped(paths: Iterable[Path], max_bytes_per_file: int | None = None) -> Iterator[Piece]:
    for path in paths:
        yield from read_pieces([path], _gunzip_if_gz(path), max_bytes_per_file)


def _all_files(root: Path) -> list[Path]:
    return _under(root, "") if root.is_dir() else []


def header_pieces() -> Iterator[Piece]:
    return read_pieces(_under(Path("/usr/include"), ".h"))


def man_pieces() -> Iterator[Piece]:
    return read_pieces(man_page_paths(), gzip.decompress)


def doc_pieces() -> Iterator[Piece]:
    return read_maybe_gzipped(_all_files(Path("/usr/share/doc")))


def record_pieces() -> Iterator[Piece]:
    """Line records: dpkg's file lists and checksums, apt's package indexes, the system logs."""
    dpkg = Path("/var/lib/dpkg")
    return interleave([read_pieces(unique_regular_files([dpkg / "status", *dpkg.glob("info/*.list"),
                                                         *dpkg.glob("info/*.md5sums")])),
                       read_pieces(unique_regular_files(Path("/var/lib/apt/lists").glob("*_Packages"))),
                       read_maybe_gzipped(_under(Path("/var/log"), ".log"))])


def executable_pieces() -> Iterator[Piece]:
    """Programs in /usr/bin and the extension modules in site-packages, at most 2 MiB of each."""
    programs = unique_regular_files(Path("/usr/bin").glob("*"))
    extensions = [p for d in _site_packages_dirs() for p in find_files(d, ".so")]
    return interleave([read_pieces(programs, max_bytes_per_file=MAX_LIBRARY_BYTES),
                       read_pieces(extensions, max_bytes_per_file=MAX_LIBRARY_BYTES)])


CORPORA: dict[str, CorpusSpec] = {
    "text": CorpusSpec("text", "Python sources: the standard library's .py files, then site-packages' "
                       ".py files, each group in sorted path order", text_pieces),
    "binary": CorpusSpec("binary", "shared libraries: /usr/lib/<multiarch>/*.so* in sorted order, "
                         "each real file once, at most its first 2 MiB", binary_pieces),
    "mixed": CorpusSpec("mixed", "man pages (decompressed from /usr/share/man/**/*.gz) interleaved "
                        "byte-for-byte evenly with JSON files from site-packages, /usr/share and "
                        "/usr/lib", mixed_pieces),
    "source": CorpusSpec("source", "program sources of other projects than text's: the Google Cloud "
                         "SDK's .py files, the base interpreter's site-packages .py files and npm's .js "
                         "files, interleaved evenly by bytes, each group in sorted path order",
                         source_pieces),
    "json": CorpusSpec("json", "JSON files from the Google Cloud SDK, site-packages, npm and /usr/share, "
                       "interleaved evenly by bytes, each group in sorted path order", json_pieces),
}
# Corpora used only to check a codec choice made on CORPORA, never to make it:
# `python -m benchmarks.run --corpora held-out --no-docs`.
HELD_OUT: dict[str, CorpusSpec] = {
    "headers": CorpusSpec("headers", "C headers: /usr/include/**/*.h in sorted order", header_pieces),
    "man": CorpusSpec("man", "man pages alone, decompressed, in sorted order", man_pieces),
    "docs": CorpusSpec("docs", "/usr/share/doc: changelogs, copyright files, HTML and text (gzip "
                       "decompressed), in sorted order", doc_pieces),
    "records": CorpusSpec("records", "line records: dpkg's status, file lists and md5sums, apt's "
                          "package indexes and /var/log/**/*.log, interleaved evenly by bytes", record_pieces),
    "executables": CorpusSpec("executables", "/usr/bin programs interleaved with site-packages' .so "
                              "extension modules, at most 2 MiB of each", executable_pieces),
}
MACHINE_MIX = CorpusSpec("machine-mix", "Python sources, whole shared libraries, man pages and JSON "
                         "files (the same sources as the three corpora) interleaved evenly by bytes",
                         machine_mix_pieces)


def write_corpus(pieces: Iterable[Piece], target_size: int, out_path: Path) -> dict:
    """Writes the first `target_size` bytes of the concatenated pieces to `out_path` (atomically)
    and returns the manifest: size, sha256 and the list of (source path, bytes used)."""
    digest = hashlib.sha256()
    used: list[tuple[str, int]] = []
    written = 0
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp_path, "wb") as out:
        for source, data in pieces:
            if written >= target_size:
                break
            data = data[: target_size - written]
            out.write(data)
            digest.update(data)
            used.append((source, len(data)))
            written += len(data)
    os.replace(tmp_path, out_path)
    return {"size": written, "target_size": target_size, "sha256": digest.hexdigest(),
            "files": len(used), "sources": used}


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**22):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(corpus_path: Path) -> Path:
    return corpus_path.with_name(corpus_path.name + ".manifest.json")


def cached_manifest(corpus_path: Path, target_size: int) -> dict | None:
    """The manifest of a cached corpus if the file is still exactly what the manifest says."""
    try:
        manifest = json.loads(manifest_path(corpus_path).read_text())
    except (OSError, ValueError):
        return None
    if (manifest.get("target_size") != target_size or not corpus_path.is_file()
            or corpus_path.stat().st_size != manifest.get("size")
            or sha256_of_file(corpus_path) != manifest.get("sha256")):
        return None
    return manifest


def build(spec: CorpusSpec, target_size: int = CORPUS_SIZE, directory: Path = CORPORA_DIR,
          rebuild: bool = False) -> tuple[Path, dict]:
    """The corpus file for `spec` (built on first use, then reused) and its manifest."""
    corpus_path = directory / f"{spec.name}-{target_size}.bin"
    manifest = None if rebuild else cached_manifest(corpus_path, target_size)
    if manifest is None or manifest.get("description") != spec.description:  # recipe changed
        manifest = {"name": spec.name, "description": spec.description,
                    **write_corpus(spec.pieces(), target_size, corpus_path)}
        manifest_path(corpus_path).write_text(json.dumps(manifest, indent=1) + "\n")
    return corpus_path, manifest


def summary(manifest: dict) -> dict:
    """The manifest without its (long) source list, for tables and logs."""
    return {k: v for k, v in manifest.items() if k != "sources"}


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=CORPUS_SIZE, help="bytes per corpus")
    parser.add_argument("--rebuild", action="store_true", help="ignore the cache")
    args = parser.parse_args(argv)
    for spec in CORPORA.values():
        path, manifest = build(spec, args.size, rebuild=args.rebuild)
        print(path, json.dumps(summary(manifest)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
