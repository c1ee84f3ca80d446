"""Corpus sources: each yields documents as lists of sentences, streaming.

A source is ``builtin:wikipedia`` (the small enwiki dump in gensim's wheel), a local file or
folder (.txt/.jsonl/.csv/.tsv/.parquet, a Wikipedia .xml/.xml.bz2 dump, or a ``save_to_disk``
dataset), or a Hugging Face hub name ``name[:config]``. Bad input fails with a one-line
:class:`WorkbenchError` naming the problem and the fix.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.metadata
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from ..errors import WorkbenchError, one_line, special_kind
from .delimited import delimited_rows

__all__ = [
    "BUILTIN_WIKIPEDIA",
    "SUPPORTED_EXTENSIONS",
    "CorpusReport",
    "builtin_rt_polarity_path",
    "builtin_wikipedia_path",
    "clean_wiki_text",
    "iter_documents",
    "iter_wikipedia_dump",
    "source_fingerprint",
    "split_sentences",
]

BUILTIN_WIKIPEDIA = "builtin:wikipedia"
SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".csv", ".tsv", ".parquet", ".xml", ".xml.bz2")
_TEXT_EXTENSIONS = (".txt", ".jsonl", ".csv", ".tsv")
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_BINARY_PROBE = 8192
_BATCH_ROWS = 1024
_FULL_HASH_BYTES = 32 << 20  # corpus files up to this size are hashed whole for the cache key
_HASH_SAMPLES, _HASH_BLOCK = 64, 1 << 16  # larger ones: this many blocks of this size
_LONG_CORPUS_ROW = 1000  # lines: a CSV/TSV row spanning more is reported (a quote may be unmatched)
_HUGE_DOCUMENT = 1_000_000  # characters: a long book; a .txt "document" beyond it gets a note


@dataclass
class CorpusReport:
    """What reading a corpus found: counts and warnings, filled in while iterating."""

    documents: int = 0
    skipped_short: int = 0
    replaced_bytes: int = 0
    files: int = 0
    warnings: list[str] = field(default_factory=list)


def builtin_wikipedia_path() -> Path:
    """The ~100-article enwiki dump that ships in gensim's wheel (offline, no download)."""
    name = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    return Path(str(files("gensim") / name))


def builtin_rt_polarity_path() -> Path:
    """The 200-line rt-polarity sample in gensim's wheel: ``__label__neg|pos text``, cp1252."""
    return Path(str(files("gensim") / "test/test_data/pang_lee_polarity.cor"))


# --- sentences -------------------------------------------------------------------------------

# Abbreviations blingfire ends a sentence after ("Mr.\nJones", "Reynolds v.\nSims", "p.\n24").
_ABBREVIATION_END = re.compile(
    r"(?:^|[\s(])(?:Mr|Mrs|Ms|Dr|Prof|St|Sr|Jr|Gen|Brig|Col|Capt|Lt|Sgt|Maj|Adm|Gov|Sen|Rev|Hon|"
    r"Mt|Ft|v|vs|p|pp|cf|No|Vol|Fig|ca|c)\.$"
)
_WHITESPACE = re.compile(r"\s+")  # the characters str.split() splits at
# Characters segmented at once: bounded memory on a one-line 50 MB document (4 bytes a character
# once it holds one rare symbol), and well inside blingfire's output buffer.
_WINDOW = 1 << 20
# A piece that is only initials ("H." "N." before "Abrams") belongs to the next sentence.
_INITIALS = re.compile(r"^(?:[A-Z]\.\s*)+$")


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences; empty ones are dropped."""
    sentences: list[str] = []
    current: list[str] = []  # pieces of the sentence being built, joined once at its end
    initials = True  # every piece of `current` is only initials
    for piece in _pieces(text):
        current.append(piece)
        initials = initials and bool(_INITIALS.match(piece))
        # A piece ending in an abbreviation, or initials so far, continues into the next one.
        # Only the piece's tail is searched (an abbreviation and its stop are 6 characters at
        # most), so a long run of glued pieces stays linear.
        if not (initials or _ABBREVIATION_END.search(piece[-8:])):
            sentences.append(" ".join(current))
            current, initials = [], True
    if current:
        sentences.append(" ".join(current))
    return sentences


def _pieces(text: str) -> Iterator[str]:
    """blingfire's sentences of `text`, whitespace collapsed, a window of characters at a time."""
    # blingfire is a compiled finite-state segmenter: much faster than pysbd or spaCy, no model
    # download (unlike nltk punkt), and it handles Wikipedia-style abbreviations/numbers well.
    # Imported here: loading prepared data (a GPU box, a notebook) needs no segmenter.
    import blingfire

    carry = ""  # the last sentence of a window may go on in the next: it is split again there
    for start in range(0, len(text), _WINDOW):
        # A regex, not " ".join(text.split()): no list of every word of a huge document.
        gap = " " if start and text[start - 1].isspace() else ""  # the window cut at a space
        chunk = _WHITESPACE.sub(" ", carry + gap + text[start:start + _WINDOW]).strip()
        split = blingfire.text_to_sentences(chunk) if chunk else ""
        # It returns "" when its output buffer overflows; keep the text whole rather than lose it.
        pieces = [p for p in (s.strip() for s in (split.split("\n") if split else [chunk])) if p]
        more = start + _WINDOW < len(text)
        carry = pieces.pop() if more and pieces and len(pieces[-1]) < _WINDOW else ""
        yield from pieces


# --- Wikipedia -------------------------------------------------------------------------------

# Everything from the first of these sections on is citations, links and lists, not prose.
_TAIL_SECTION = re.compile(
    r"^[ \t]*==+[ \t]*(?:references|see also|external links|further reading|notes|footnotes|"
    r"endnotes|bibliography|sources|citations|works cited|notes and references|"
    r"references and notes|sources and references|notes and citations)[ \t]*==+[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
# Blocks whose content is never prose (galleries are captions, the rest is code or markup).
_DROP_BLOCKS = re.compile(
    r"<(gallery|timeline|imagemap|score|syntaxhighlight|source|pre|math|chem|graph|mapframe)"
    r"\b[^>]*?(?:/>|>.*?</\1\s*>)",
    re.IGNORECASE | re.DOTALL,
)
# gensim's own <ref> pattern stops at the first "/>", e.g. a <br /> inside the citation.
_REF = re.compile(r"<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_NESTED_LINK = re.compile(r"\[\[\s*:?\s*(?:file|image|media|category)\s*:", re.IGNORECASE)
_LINK_TOKEN = re.compile(r"\[\[|\]\]")
_TABLE_START = re.compile(r"^[ \t]*\{\|", re.MULTILINE)
_TABLE_TOKEN = re.compile(r"^[ \t]*(?:\{\||\|\})", re.MULTILINE)
_TEMPLATE_START = re.compile(r"\{\{")
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}")
_TAG = re.compile(r"</?[a-zA-Z][^<>]*>|<!--|-->")
_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+")
_EMPTY_PARENS = re.compile(r"[(\[]\s*(?:[,;:.–—-]\s*)*[)\]]")
_PAREN_LEAD = re.compile(r"([(\[])\s*(?:[,;:]\s*)+")
_PAREN_SPACE = re.compile(r"([(\[])\s+")
_PAREN_TAIL = re.compile(r"\s*(?:[,;:]\s*)+([)\]])")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?%)\]])")
_REPEATED_PUNCT = re.compile(r"([,;])(?:\s*[,;])+")
_DANGLING_PUNCT = re.compile(r"[,;:](?=[.!?])")
_PROSE_START = re.compile(r"[\w\"'“‘(«¿¡$£€]|\.\.\.")
_LEFTOVER = ("{{", "}}", "[[", "]]", "|", "==", "http", "www.")
_PROSE_END = re.compile(r"[.!?][\"'”’»)\]]*$")


_INNER_TEMPLATE = re.compile(r"\{\{\s*([^{}|]+?)\s*(?:\|([^{}]*))?\}\}")
_RANGE_WORDS = {"to", "-", "–", "and", "or", "by", "x", "×", "+/-", "±"}
_UNITS = {
    "C": "°C",
    "F": "°F",
    "C-change": "°C",
    "F-change": "°F",
    "sqkm": "km²",
    "km2": "km²",
    "sqmi": "sq mi",
    "m2": "m²",
}
# Inline templates whose text is part of the sentence; the rest are citations, boxes, notes.
_KEEP_LAST_ARG = {"lang", "transl", "nowrap", "nobr", "small", "smaller", "big", "nobold", "abbr"}
_KEEP_FIRST_ARG = {"flag", "flagcountry", "nihongo", "sic", "visible anchor", "em", "not a typo"}


def _render_template(match: re.Match[str]) -> str:
    name = match.group(1).strip().lower()
    args = [a.strip() for a in (match.group(2) or "").split("|") if "=" not in a]
    if not args:
        return match.group(0)
    if name in ("convert", "cvt"):
        # {{convert|5|to|10|km|mi}} -> "5 to 10 km": dropping it would leave "averaging about."
        value, rest = args[0], args[1:]
        if len(rest) >= 2 and rest[0] in _RANGE_WORDS:
            value, rest = f"{value} {rest[0]} {rest[1]}", rest[2:]
        unit = _UNITS.get(rest[0], rest[0]) if rest else ""
        return f"{value} {unit}".strip()
    if name == "as of":
        return f"{match.group(1).strip()[:2]} of {' '.join(args[:3])}"
    if name in _KEEP_LAST_ARG:
        return args[-1]
    if name in _KEEP_FIRST_ARG:
        return args[0]
    return match.group(0)


def _render_inline_templates(markup: str) -> str:
    """Replace the innermost prose-carrying templates by their text; others stay for removal."""
    for _ in range(3):  # a few rounds reach templates nested in templates
        rendered = _INNER_TEMPLATE.sub(_render_template, markup)
        if rendered == markup:
            break
        markup = rendered
    return markup


def _strip_nested(text: str, start: re.Pattern[str], token: re.Pattern[str], opener: str) -> str:
    """Remove every balanced construct that `start` finds; an unclosed one up to its line end."""
    out: list[str] = []
    pos = 0
    while (match := start.search(text, pos)) is not None:
        out.append(text[pos : match.start()])
        depth, end = 0, None
        for tok in token.finditer(text, match.start()):
            depth += 1 if tok.group().strip().startswith(opener) else -1
            if depth == 0:
                end = tok.end()
                break
        if end is None:  # unbalanced markup: dropping to the end of the line loses the least
            newline = text.find("\n", match.end())
            end = len(text) if newline < 0 else newline
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _clean_paragraph(line: str) -> str:
    """Remove inline markup that filter_wiki leaves in a line of prose."""
    line = line.replace("'''", "").replace("''", "")
    line = _TAG.sub("", line)
    line = _URL.sub("", line)
    line = line.replace("\xa0", " ")
    line = _EMPTY_PARENS.sub("", line)  # "(; born 1950)" minus its template -> "()"
    line = _PAREN_LEAD.sub(r"\1", line)
    line = _PAREN_SPACE.sub(r"\1", line)
    line = _PAREN_TAIL.sub(r"\1", line)
    line = _EMPTY_PARENS.sub("", line)
    line = " ".join(line.split())
    line = _SPACE_BEFORE_PUNCT.sub(r"\1", line)  # removed <ref>s leave "ASD , a 30%"
    line = _REPEATED_PUNCT.sub(r"\1", line)
    return _DANGLING_PUNCT.sub("", line)  # "Thus, <math>..</math>." -> "Thus,." -> "Thus."


def clean_wiki_text(markup: str) -> list[str]:
    """Turn one article's wiki markup into clean prose paragraphs."""
    from gensim.corpora.wikicorpus import filter_wiki  # lazy: gensim is slow to import

    tail = _TAIL_SECTION.search(markup)
    if tail is not None:
        markup = markup[: tail.start()]
    markup = _COMMENT.sub("", markup)
    markup = _DROP_BLOCKS.sub("", markup)
    markup = _REF.sub("", markup)
    markup = _render_inline_templates(markup)
    # Images and categories go whole: gensim keeps captions, which are fragments, not prose.
    markup = _strip_nested(markup, _NESTED_LINK, _LINK_TOKEN, "[[")
    markup = _strip_nested(markup, _TABLE_START, _TABLE_TOKEN, "{|")
    markup = _strip_nested(markup, _TEMPLATE_START, _TEMPLATE_TOKEN, "{{")
    candidates: list[str] = []
    joinable = False  # the last candidate is unfinished prose that a wrapped line may continue
    for raw in filter_wiki(markup).split("\n"):
        line = raw.strip()
        # Headings, lists (* # : ;) and table rows (| !) are not sentences.
        if line and line[0] not in "=*#:;|!{}":
            line = _clean_paragraph(line)
        else:
            line = ""
        if not line or any(junk in line for junk in _LEFTOVER):
            joinable = False
            continue
        if joinable and line[0].islower():  # MediaWiki joins hard-wrapped lines
            candidates[-1] += " " + line
        else:
            candidates.append(line)
        joinable = not _PROSE_END.search(candidates[-1])
    # Captions and stubs ("Autism spectrum disorder video") have few words and no full stop;
    # a paragraph opening with ", where" lost its start to removed <math>.
    return [
        p
        for p in candidates
        if len(p.split()) >= 6 and _PROSE_END.search(p) and _PROSE_START.match(p)
    ]


def _is_wiki_dump(path: Path) -> bool:
    name = path.name.lower()
    # Dump shards are named like enwiki-...-pages-articles1.xml-p1p41242.bz2.
    return name.endswith(".xml") or (name.endswith(".bz2") and ".xml" in name)


def iter_wikipedia_dump(path: str | Path) -> Iterator[tuple[str, list[str]]]:
    """Stream (title, paragraphs) for each article of a MediaWiki .xml or .xml.bz2 dump."""
    from xml.etree.ElementTree import ParseError

    from gensim.corpora.wikicorpus import extract_pages

    path = Path(path)
    opener = bz2.open if path.name.lower().endswith(".bz2") else open
    try:
        with opener(path, "rb") as fileobj:
            # Namespace 0 is articles; talk, user and template pages are not prose.
            for title, text, _ in extract_pages(fileobj, filter_namespaces=("0",)):
                if not text or text.lstrip()[:9].upper() == "#REDIRECT":
                    continue
                yield title, clean_wiki_text(text)
    except (ParseError, OSError, EOFError, ValueError) as exc:  # ValueError: not a MediaWiki ns
        raise WorkbenchError(
            f"file '{path}' is not a readable MediaWiki XML dump ({one_line(exc)}); "
            "pass a pages-articles .xml or .xml.bz2 dump"
        ) from None


# --- local text files ------------------------------------------------------------------------


def _check_not_binary(path: Path) -> None:
    with open(path, "rb") as fileobj:
        head = fileobj.read(_BINARY_PROBE)
    nul = head.find(b"\0")
    if nul >= 0:
        raise WorkbenchError(
            f"file '{path}' looks binary (NUL byte at offset {nul}); pass a UTF-8 text file"
        )


def _decode(raw: bytes, path: Path, offset: int, errors: str, report: CorpusReport) -> str:
    """Decode one line; `offset` is its first byte in the file, for the strict-mode message."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if errors == "strict":
            bad = raw[exc.start : exc.start + 1].hex()
            raise WorkbenchError(
                f"file '{path}' is not valid UTF-8 (byte 0x{bad} at offset {offset + exc.start}); "
                "re-save it as UTF-8 or pass --errors replace"
            ) from None
    # Count each invalid sequence ourselves: plain "replace" can't tell them from real U+FFFD.
    parts, count = [], 0
    while True:
        try:
            parts.append(raw.decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            parts.append(raw[: exc.start].decode("utf-8") + "\ufffd")
            raw = raw[exc.end :]
            count += 1
    report.replaced_bytes += count
    return "".join(parts)


def _iter_lines(path: Path, errors: str, report: CorpusReport) -> Iterator[str]:
    """Decoded lines (ending kept), read line by line so huge files stream."""
    _check_not_binary(path)
    before = report.replaced_bytes
    offset = 0
    with open(path, "rb") as fileobj:
        for raw in fileobj:
            if offset == 0 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM is not text
                offset, raw = 3, raw[3:]
            yield _decode(raw, path, offset, errors, report)
            offset += len(raw)
    replaced = report.replaced_bytes - before
    if replaced:
        report.warnings.append(
            f"file '{path}': replaced {replaced} invalid UTF-8 sequence(s) with U+FFFD"
        )


def _read_txt(path: Path, errors: str, report: CorpusReport) -> Iterator[list[str]]:
    paragraphs: list[str] = []
    first = chars = 0  # line number where the document starts, its characters
    for number, line in enumerate(_iter_lines(path, errors, report), start=1):
        text = line.strip()
        if text:
            first = first or number
            paragraphs.append(text)
            chars += len(text)
        elif paragraphs:
            _note_huge_document(path, first, number - 1, chars, report)
            yield paragraphs
            paragraphs, first, chars = [], 0, 0
    if paragraphs:
        _note_huge_document(path, first, first + len(paragraphs) - 1, chars, report)
        yield paragraphs


def _note_huge_document(path: Path, first: int, last: int, chars: int, report: CorpusReport) -> None:
    # A file of one sentence per line and no blank line is one huge document, not many (NSP
    # draws NotNext partners from other documents): say so, once per file.
    if chars < _HUGE_DOCUMENT or any(w.startswith(f"file '{path}': line") for w in report.warnings):
        return
    size = f"{chars / 1e6:.1f} MB"
    what = (f"line {first} ({size}) is" if first == last else
            f"lines {first}-{last} ({size}), with no blank line between them, are")
    report.warnings.append(f"file '{path}': {what} read as one document; put a blank line between "
                           "documents (or use .jsonl, one document per line)")


def _missing_column(where: str, column: str, available: Iterable[str]) -> WorkbenchError:
    names = ", ".join(repr(str(name)) for name in available) or "none"
    return WorkbenchError(
        f"{where} has no column {column!r} (columns: {names}); pass --text-column with one of them"
    )


def _row_text(value: object, where: str, column: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        raise WorkbenchError(
            f"{where}: column {column!r} holds {type(value).__name__}, not text; "
            "pass --text-column naming a text column"
        )
    return value.splitlines()


def _read_jsonl(path: Path, column: str, errors: str, report: CorpusReport) -> Iterator[list[str]]:
    for number, line in enumerate(_iter_lines(path, errors, report), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkbenchError(
                f"file '{path}' line {number} is not valid JSON ({exc.msg}); "
                "fix or remove that line (one JSON object per line)"
            ) from None
        if not isinstance(row, dict):
            raise WorkbenchError(
                f"file '{path}' line {number} is a JSON {type(row).__name__}, not an object; "
                f'write one object per line, like {{"{column}": "..."}}'
            )
        if column not in row:
            raise _missing_column(f"file '{path}' line {number}", column, row)
        yield _row_text(row[column], f"file '{path}' line {number}", column)


def _read_delimited(
    path: Path, column: str, errors: str, report: CorpusReport, delimiter: str
) -> Iterator[list[str]]:
    rows = delimited_rows(_iter_lines(path, errors, report), path, delimiter, report.warnings,
                          long_row=_LONG_CORPUS_ROW)
    header = next(rows, None)
    if header is None:
        return
    if column not in header[1]:
        raise _missing_column(f"file '{path}'", column, header[1])
    index = header[1].index(column)
    for line, row in rows:
        if index < len(row):
            yield _row_text(row[index], f"file '{path}' line {line}", column)


def _read_parquet(path: Path, column: str) -> Iterator[list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise WorkbenchError(
            f"file '{path}' is not a readable Parquet file ({one_line(exc)}); "
            "pass a valid .parquet file"
        ) from None
    if column not in parquet.schema_arrow.names:
        raise _missing_column(f"file '{path}'", column, parquet.schema_arrow.names)
    # Row-group batches keep memory flat however large the file is.
    for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=[column]):
        for value in batch.column(0).to_pylist():
            yield _row_text(value, f"file '{path}'", column)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in _DATASET_MARKERS)


def _read_saved_dataset(path: Path, column: str) -> Iterator[list[str]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for a damaged folder
        raise WorkbenchError(
            f"folder '{path}' is not a readable saved dataset ({one_line(exc)}); "
            "pass a folder written by Dataset.save_to_disk"
        ) from None
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            splits = ", ".join(dataset) or "none"
            raise WorkbenchError(
                f"saved dataset '{path}' has no 'train' split (splits: {splits}); "
                "save the training split as 'train'"
            )
        dataset = dataset["train"]
    if column not in dataset.column_names:
        raise _missing_column(f"saved dataset '{path}'", column, dataset.column_names)
    for batch in dataset.select_columns([column]).iter(batch_size=_BATCH_ROWS):
        for value in batch[column]:
            yield _row_text(value, f"saved dataset '{path}'", column)


def _read_hub_corpus(name: str, column: str) -> Iterator[list[str]]:
    import datasets

    repo, _, config = name.partition(":")
    try:
        dataset = datasets.load_dataset(repo, config or None, split="train", streaming=True)
    except Exception as exc:  # offline, unknown name, gated repo...: all the same to the user
        raise WorkbenchError(
            f"corpus {name!r} does not exist locally and could not be loaded from the Hugging "
            f"Face hub ({one_line(exc, 200)}); pass a local file or folder, "
            f"{BUILTIN_WIKIPEDIA}, or a hub name `name[:config]` when online"
        ) from None
    for row in dataset:
        if column not in row:
            raise _missing_column(f"hub dataset {name!r}", column, row)
        yield _row_text(row[column], f"hub dataset {name!r}", column)


# --- resolving a source ----------------------------------------------------------------------


def _extension(path: Path) -> str:
    name = path.name.lower()
    if _is_wiki_dump(path):
        return ".xml.bz2" if name.endswith(".bz2") else ".xml"
    return path.suffix.lower()


def _looks_like_path(source: str) -> bool:
    # "org/name" is also a hub id, so one slash alone is not enough to call it a path.
    return (
        source.startswith(("/", ".", "~"))
        or "\\" in source
        or source.count("/") > 1
        or source.endswith("/")
        or _extension(Path(source)) in SUPPORTED_EXTENSIONS
        or Path(source).suffix.lower() in (".json", ".bz2", ".gz", ".zip")
    )


def _supported_list() -> str:
    return ", ".join(SUPPORTED_EXTENSIONS)


def _local_files(path: Path, report: CorpusReport | None = None) -> list[Path]:
    """The files a local source reads, sorted; a saved dataset's folder counts as one entry."""
    kind = special_kind(path)
    if kind is not None:  # neither a file nor a folder: reading a FIFO waits for a writer, /dev/zero never ends
        raise WorkbenchError(f"corpus '{path}' is {kind}, not a file or folder; save the text to a file "
                             f"({_supported_list()}) and pass that")
    if _is_saved_dataset(path) or path.is_file():
        if path.is_file() and _extension(path) not in SUPPORTED_EXTENSIONS:
            raise WorkbenchError(
                f"file '{path}' has an unsupported extension '{path.suffix}'; "
                f"pass one of {_supported_list()}, or a folder of them"
            )
        return [path]
    entries = [p for p in sorted(path.rglob("*")) if not _hidden(p, path)]
    # A saved dataset is one source however many files it holds (a DatasetDict nests splits).
    saved = [p for p in entries if _is_saved_dataset(p)]
    saved = [d for d in saved if not any(s in d.parents for s in saved)]
    found: list[Path] = list(saved)
    skipped: list[Path] = []
    for child in entries:
        if child.is_file() and not any(d in child.parents for d in saved):
            (found if _extension(child) in SUPPORTED_EXTENSIONS else skipped).append(child)
    found.sort()
    if not found:
        raise WorkbenchError(
            f"folder '{path}' contains no supported files; add {_supported_list()} files "
            "or pass another folder"
        )
    if skipped and report is not None:
        report.warnings.append(
            f"folder '{path}': skipped {len(skipped)} unsupported file(s), "
            f"e.g. '{skipped[0].relative_to(path)}'"
        )
    return found


def _hidden(child: Path, root: Path) -> bool:
    # .git, .ipynb_checkpoints and .DS_Store are never corpus files.
    return any(part.startswith(".") for part in child.relative_to(root).parts)


def _resolve_local(source: str) -> Path | None:
    """The local path `source` names, None for a hub name; raises for a missing path."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    if _looks_like_path(source):
        raise WorkbenchError(
            f"corpus path '{source}' does not exist; pass an existing file or folder, "
            f"or {BUILTIN_WIKIPEDIA}"
        )
    return None


def _read_file(path: Path, column: str, errors: str, report: CorpusReport) -> Iterator[list[str]]:
    report.files += 1
    if path.is_dir():
        yield from _read_saved_dataset(path, column)
        return
    ext = _extension(path)
    if ext in _TEXT_EXTENSIONS[1:]:
        if ext == ".jsonl":
            yield from _read_jsonl(path, column, errors, report)
        else:
            yield from _read_delimited(path, column, errors, report, "\t" if ext == ".tsv" else ",")
    elif ext == ".txt":
        yield from _read_txt(path, errors, report)
    elif ext == ".parquet":
        yield from _read_parquet(path, column)
    else:
        for _, paragraphs in iter_wikipedia_dump(path):
            yield paragraphs


def _builtin(source: str) -> Path:
    if source != BUILTIN_WIKIPEDIA:
        raise WorkbenchError(f"unknown builtin corpus {source!r}; use {BUILTIN_WIKIPEDIA}")
    return builtin_wikipedia_path()


def _documents(
    source: str,
    paths: list[Path] | None,
    column: str,
    min_doc_words: int,
    errors: str,
    max_documents: int,
    report: CorpusReport,
) -> Iterator[list[str]]:
    if paths is None:
        raw: Iterator[list[str]] = _read_hub_corpus(source, column)
    else:
        raw = (doc for path in paths for doc in _read_file(path, column, errors, report))
    yielded = 0
    for paragraphs in raw:
        sentences = [s for paragraph in paragraphs for s in split_sentences(paragraph)]
        if not sentences:
            continue
        if sum(len(s.split()) for s in sentences) < min_doc_words:
            report.skipped_short += 1
            continue
        report.documents += 1
        yielded += 1
        yield sentences
        if max_documents > 0 and yielded >= max_documents:
            return


def iter_documents(
    source: str,
    *,
    text_column: str = "text",
    min_doc_words: int = 50,
    errors: str = "strict",
    max_documents: int = 0,
    report: CorpusReport | None = None,
) -> Iterator[list[str]]:
    """Stream the documents of `source`, each a list of sentences; short ones are skipped."""
    # Not a generator itself, so a bad source or option fails here, before any work starts.
    if errors not in ("strict", "replace"):
        raise WorkbenchError(f"errors {errors!r} is not supported; pass --errors strict or replace")
    report = report if report is not None else CorpusReport()
    paths: list[Path] | None
    if source.startswith("builtin:"):
        paths = [_builtin(source)]
    else:
        path = _resolve_local(source)
        paths = None if path is None else _local_files(path, report)
    return _documents(source, paths, text_column, min_doc_words, errors, max_documents, report)


def source_fingerprint(source: str, text_column: str = "text") -> str:
    """A stable string that changes when the corpus `source` names changes (for cache keys)."""
    if source.startswith("builtin:"):
        _builtin(source)
        # The wheel's version, read without importing gensim (seconds): keeps cached loads fast.
        return f"{source}@gensim-{importlib.metadata.version('gensim')}"
    path = _resolve_local(source)
    if path is None:
        return f"hub:{source}#{text_column}"
    entries = []
    for file in _local_files(path):
        # A saved dataset is a folder: every file in it counts.
        members = sorted(p for p in file.rglob("*") if p.is_file()) if file.is_dir() else [file]
        for member in members:
            stat = member.stat()
            rel = member.relative_to(path).as_posix() if path.is_dir() else member.name
            # Content too: a file rewritten with the same size and modification time (a copy
            # with `cp -p`, a restored backup) is another corpus.
            entries.append((rel, stat.st_size, stat.st_mtime_ns, _content_digest(member, stat.st_size)))
    digest = hashlib.sha256(json.dumps([text_column, entries]).encode()).hexdigest()[:16]
    return f"files:{path.name}:{digest}"


def _content_digest(path: Path, size: int) -> str:
    """A hash of a file's bytes: all of them up to 32 MB, else 64 blocks spread evenly (~4 MB read)."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fileobj:
            if size <= _FULL_HASH_BYTES:
                while block := fileobj.read(1 << 20):
                    digest.update(block)
            else:  # first and last blocks included; an edit elsewhere also changes the mtime
                for i in range(_HASH_SAMPLES):
                    fileobj.seek((size - _HASH_BLOCK) * i // (_HASH_SAMPLES - 1))
                    digest.update(fileobj.read(_HASH_BLOCK))
    except OSError as exc:
        raise WorkbenchError(f"file '{path}' is not readable ({one_line(exc)}); "
                             "check its permissions or pass another corpus") from None
    return digest.hexdigest()
