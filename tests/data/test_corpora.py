"""Corpus sources: builtin Wikipedia, every local format, and one-line errors for bad input."""

from __future__ import annotations

import bz2
import json
import os
import statistics

import pytest

from workbench.data.corpora import (
    BUILTIN_WIKIPEDIA,
    CorpusReport,
    builtin_rt_polarity_path,
    builtin_wikipedia_path,
    clean_wiki_text,
    iter_documents,
    iter_wikipedia_dump,
    source_fingerprint,
    split_sentences,
)
from workbench.errors import WorkbenchError

MARKUP = ("'''", "''", "{{", "}}", "==", "[[", "]]", "|", "<ref", "</", "http", "thumb|")

# Three documents of real prose, each a few sentences long.
DOCS = [
    [
        "The Amazon River in South America is the largest river by discharge volume of water.",
        "It flows through Peru, Colombia and Brazil before reaching the Atlantic Ocean.",
    ],
    [
        "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity.",
        "She was the first woman to win a Nobel Prize.",
        "She remains the only person to win Nobel Prizes in two scientific fields.",
    ],
    [
        "The printing press was invented around 1440 by Johannes Gutenberg in Mainz.",
        "It made books far cheaper and spread literacy across Europe.",
    ],
]
TEXTS = [" ".join(doc) for doc in DOCS]


def read(source, **kwargs) -> list[list[str]]:
    kwargs.setdefault("min_doc_words", 0)
    return list(iter_documents(str(source), **kwargs))


def error_of(source, **kwargs) -> str:
    with pytest.raises(WorkbenchError) as info:
        read(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- builtin Wikipedia -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def wiki() -> tuple[list[list[str]], CorpusReport]:
    report = CorpusReport()
    return list(iter_documents(BUILTIN_WIKIPEDIA, report=report)), report


def test_builtin_wikipedia_is_clean_prose(wiki):
    docs, report = wiki
    assert len(docs) >= 80
    assert report.documents == len(docs) and report.files == 1
    sentences = [s for doc in docs for s in doc]
    assert all(isinstance(s, str) and s.strip() == s and s for s in sentences)
    leftovers = [s for s in sentences if any(m in s for m in MARKUP)]
    assert leftovers == []
    mean_words = statistics.mean(len(s.split()) for s in sentences)
    assert 8 <= mean_words <= 40
    assert sum(len(s) for s in sentences) > 1_500_000


def test_builtin_wikipedia_drops_reference_sections_and_fragments(wiki):
    docs, _ = wiki
    sentences = [s for doc in docs for s in doc]
    for junk in ("Retrieved", "accessdate", "Further reading", "External links", "ISBN", "doi:"):
        assert not any(junk in s for s in sentences), junk
    # Headings and image captions are not sentences; Autism's lead is intact.
    assert "Characteristics" not in sentences
    assert not any(s.startswith("Autism spectrum disorder video") for s in sentences)
    assert any(
        s.startswith("Autism is a neurodevelopmental disorder characterized") for s in sentences
    )


def test_builtin_paths_exist():
    assert builtin_wikipedia_path().is_file()
    # The sample is Windows-1252 (0x97 dashes), not UTF-8.
    lines = builtin_rt_polarity_path().read_text(encoding="cp1252").splitlines()
    assert len(lines) == 200
    assert all(line.startswith(("__label__neg ", "__label__pos ")) for line in lines)


def test_clean_wiki_text_removes_markup():
    markup = """{{Infobox person|name=Ada|birth_date={{birth date|1815|12|10}}}}
[[File:Ada Lovelace portrait.jpg|thumb|left|Portrait of [[Ada Lovelace]] in 1840]]
'''Ada Lovelace''' was an English [[mathematician]] known for her work on the [[Analytical Engine]].<ref name="a">{{cite web|url=http://example.org|title=X}}</ref> She lived {{convert|5|km|mi}} from the city.
<!-- a hidden comment that is long enough to count as a sentence. -->
==Early life==
Her father was the poet Lord Byron, who left England when she was an infant.<ref>Smith, p. 4<br />Jones</ref>
* A list item with enough words to look like a sentence.
{| class="wikitable"
|-
| A table cell with enough words to look like a sentence. || Another cell.
|}
Short caption
==References==
This sentence sits in the references section and must not survive.
[[Category:English mathematicians]]
"""
    assert clean_wiki_text(markup) == [
        "Ada Lovelace was an English mathematician known for her work on the Analytical Engine. "
        "She lived 5 km from the city.",
        "Her father was the poet Lord Byron, who left England when she was an infant.",
    ]


PAGE = """  <page>
    <title>{title}</title>
    <ns>{ns}</ns>
    <id>{id}</id>
    <revision><id>1{id}</id><text xml:space="preserve">{text}</text></revision>
  </page>
"""


def write_dump(path, pages) -> None:
    body = "".join(
        PAGE.format(title=t, ns=ns, id=i, text=text) for i, (t, ns, text) in enumerate(pages)
    )
    xml = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">\n'
        "  <siteinfo><sitename>Wikipedia</sitename></siteinfo>\n" + body + "</mediawiki>\n"
    )
    opener = bz2.open if path.name.endswith(".bz2") else open
    with opener(path, "wt", encoding="utf-8") as out:
        out.write(xml)


@pytest.mark.parametrize(
    "name", ["tiny.xml.bz2", "tiny.xml", "enwiki-pages-articles1.xml-p1p9.bz2"]
)
def test_small_wikipedia_dump(tmp_path, name):
    article = (
        "'''Gutenberg''' was a [[Germany|German]] inventor.&lt;ref&gt;Man, p. 2&lt;/ref&gt; "
        "He introduced printing to Europe with his mechanical press.\n\n"
        "==See also==\n* [[Printing]]"
    )
    write_dump(
        tmp_path / name,
        [
            ("Gutenberg", 0, article),
            ("Guttenberg", 0, "#REDIRECT [[Gutenberg]]"),
            ("Talk:X", 1, "Chat."),
        ],
    )
    pages = list(iter_wikipedia_dump(tmp_path / name))
    assert pages == [
        (
            "Gutenberg",
            [
                "Gutenberg was a German inventor. He introduced printing to Europe with his mechanical press."
            ],
        )
    ]
    assert read(tmp_path / name) == [
        [
            "Gutenberg was a German inventor.",
            "He introduced printing to Europe with his mechanical press.",
        ]
    ]


def test_broken_dump_is_one_line_error(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text("<mediawiki><page><title>x</title>", encoding="utf-8")
    assert "not a readable MediaWiki XML dump" in error_of(path)


# --- local formats ---------------------------------------------------------------------------


def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    # Each line is a paragraph; a line without a full stop stays its own sentence.
    path.write_text(
        "\n".join(DOCS[0]) + "\n\n\n" + "A heading line\n" + TEXTS[1] + "\n  \n" + TEXTS[2] + "\n",
        encoding="utf-8",
    )
    assert read(path) == [DOCS[0], ["A heading line", *DOCS[1]], DOCS[2]]


def test_jsonl(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"id": i, "body": text} for i, text in enumerate(TEXTS)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    assert read(path, text_column="body") == DOCS


@pytest.mark.parametrize("suffix,delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_and_tsv(tmp_path, suffix, delimiter):
    import csv

    path = tmp_path / f"corpus{suffix}"
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter=delimiter)
        writer.writerow(["title", "text"])
        writer.writerow(["Amazon", TEXTS[0]])
        # A quoted field with a newline is one row, the newline a paragraph break.
        writer.writerow(["Curie", DOCS[1][0] + "\n" + " ".join(DOCS[1][1:])])
        writer.writerow(["Gutenberg", TEXTS[2]])
    assert read(path) == DOCS


def test_parquet_streams_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "corpus.parquet"
    table = pa.table({"text": TEXTS * 700, "n": list(range(2100))})
    pq.write_table(table, path, row_group_size=500)
    docs = read(path)
    assert len(docs) == 2100 and docs[:3] == DOCS


def test_saved_dataset_and_dataset_dict(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1, 2]})
    dataset.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(
        str(tmp_path / "dict")
    )
    assert read(tmp_path / "single") == DOCS
    assert read(tmp_path / "dict") == DOCS
    assert "no column 'body'" in error_of(tmp_path / "single", text_column="body")


def test_folder_reads_supported_files_recursively_in_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text(TEXTS[0] + "\n", encoding="utf-8")
    (tmp_path / "b" / "c.jsonl").write_text(json.dumps({"text": TEXTS[1]}) + "\n", encoding="utf-8")
    (tmp_path / "b" / "d.txt").write_text(TEXTS[2] + "\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("# not a corpus file\n", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text(
        "Hidden files are skipped entirely here.\n", encoding="utf-8"
    )
    report = CorpusReport()
    assert read(tmp_path, report=report) == DOCS
    assert report.files == 3 and report.documents == 3
    assert any("notes.md" in warning for warning in report.warnings)


def test_min_doc_words_and_max_documents(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("Too short to keep.\n\n" + "\n\n".join(TEXTS) + "\n", encoding="utf-8")
    report = CorpusReport()
    assert read(path, min_doc_words=10, report=report) == DOCS
    assert report.skipped_short == 1 and report.documents == 3
    assert read(path, min_doc_words=30) == [DOCS[1]]
    assert read(path, min_doc_words=10, max_documents=2) == DOCS[:2]


def test_empty_corpus_yields_nothing(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n", encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "empty.csv").write_text("text\n", encoding="utf-8")
    assert read(tmp_path) == []


# --- sentences -------------------------------------------------------------------------------


def test_split_sentences():
    assert split_sentences("Dr. Smith went to Washington. He arrived at 5 p.m. on Monday.") == [
        "Dr. Smith went to Washington.",
        "He arrived at 5 p.m. on Monday.",
    ]
    assert split_sentences("It cost $3.50. Mr. Jones paid! Did he? Yes.") == [
        "It cost $3.50.",
        "Mr. Jones paid!",
        "Did he?",
        "Yes.",
    ]
    assert split_sentences("The U.S. economy grew 2.5% in 2019. Growth then slowed.") == [
        "The U.S. economy grew 2.5% in 2019.",
        "Growth then slowed.",
    ]
    assert split_sentences('He said "Go home." Then\nhe   left.') == [
        'He said "Go home."',
        "Then he left.",
    ]
    assert split_sentences("The book is by H. N. Abrams. In Reynolds v. Sims the court ruled.") == [
        "The book is by H. N. Abrams.",
        "In Reynolds v. Sims the court ruled.",
    ]
    assert split_sentences("no final punctuation") == ["no final punctuation"]
    assert split_sentences("") == [] and split_sentences(" \n\t ") == []


# --- bad input -------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    message = error_of(tmp_path / "nope.txt")
    assert "does not exist" in message and "nope.txt" in message and BUILTIN_WIKIPEDIA in message
    assert "does not exist" in error_of("data/missing/folder")
    with pytest.raises(WorkbenchError, match="does not exist"):
        iter_documents(str(tmp_path / "nope.txt"))  # at the call, before iterating


def test_unsupported_extension(tmp_path):
    path = tmp_path / "corpus.docx"
    path.write_bytes(b"PK")
    message = error_of(path)
    assert "unsupported extension '.docx'" in message and ".jsonl" in message


def test_unknown_builtin():
    assert "builtin:wikipedia" in error_of("builtin:books")


def test_binary_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"Some text first.\n" + b"\x00\x01\x02" * 10)
    message = error_of(path)
    assert message == (
        f"file '{path}' looks binary (NUL byte at offset 17); pass a UTF-8 text file"
    )


def test_invalid_utf8_strict_names_file_and_offset(tmp_path):
    path = tmp_path / "corpus.txt"
    good = "Première ligne avec des accents.\nSecond line is fine too.\n".encode()
    path.write_bytes(good + b"Bad byte \xff here.\n")
    message = error_of(path)
    offset = len(good) + len(b"Bad byte ")
    assert (
        f"'{path}'" in message and f"offset {offset}" in message and "--errors replace" in message
    )


def test_invalid_utf8_replace_counts_and_goes_on(tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [
        b'{"text": "A first document with a broken byte here\xff"}',
        b'{"text": "A second one, broken twice \xe2\x82 and \xc3 there."}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = CorpusReport()
    docs = read(path, errors="replace", report=report)
    assert report.replaced_bytes == 3
    assert docs[0] == ["A first document with a broken byte here\ufffd"]
    assert "\ufffd and \ufffd" in docs[1][0]
    assert len(report.warnings) == 1 and "3 invalid UTF-8" in report.warnings[0]
    assert "not supported" in error_of(path, errors="ignore")


def test_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "x", "id": 1}) + "\n", encoding="utf-8")
    (tmp_path / "a.csv").write_text("body,id\nx,1\n", encoding="utf-8")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.csv", "a.parquet"):
        message = error_of(tmp_path / name)
        assert "no column 'text'" in message and "'body'" in message and "--text-column" in message


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"text": TEXTS[0]}) + "\n\n{not json\n", encoding="utf-8")
    message = error_of(path)
    assert f"'{path}' line 3 is not valid JSON" in message
    path.write_text('["a list"]\n', encoding="utf-8")
    assert "line 1 is a JSON list" in error_of(path)


def test_hub_name_offline_is_one_line_error(monkeypatch):
    import datasets
    import huggingface_hub.constants

    # Offline mode fails at once instead of retrying DNS for ~25 s.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = error_of("wikitext:wikitext-103-raw-v1")
    assert "Hugging Face hub" in message and BUILTIN_WIKIPEDIA in message


def test_folder_without_supported_files(tmp_path):
    (tmp_path / "readme.md").write_text("hello\n", encoding="utf-8")
    assert "no supported files" in error_of(tmp_path)


# --- fingerprints ----------------------------------------------------------------------------


def test_source_fingerprint(tmp_path):
    import gensim

    assert gensim.__version__ in source_fingerprint(BUILTIN_WIKIPEDIA)
    assert source_fingerprint("wikitext:wikitext-2-raw-v1") != source_fingerprint("wikitext")
    path = tmp_path / "corpus.txt"
    path.write_text(TEXTS[0] + "\n", encoding="utf-8")
    first = source_fingerprint(str(path))
    assert first == source_fingerprint(str(path))
    assert first != source_fingerprint(str(path), text_column="body")
    path.write_text(TEXTS[1] + "\n", encoding="utf-8")
    second = source_fingerprint(str(path))
    assert second != first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source_fingerprint(str(path)) != second
    folder = source_fingerprint(str(tmp_path))
    (tmp_path / "more.txt").write_text(TEXTS[2] + "\n", encoding="utf-8")
    assert source_fingerprint(str(tmp_path)) != folder
    with pytest.raises(WorkbenchError, match="does not exist"):
        source_fingerprint(str(tmp_path / "gone.txt"))
