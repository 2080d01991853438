"""Text for language-model distillation: local files, or the English prose bundled with Python.

Python ships its reference manual's topics (`pydoc_data.topics`, ~79 documents, ~465 k characters) for
`help()`; that is real English prose that needs no download. Sentences are split by document, so no
test sentence comes from a document the student trained on.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import UserError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")


@dataclass(frozen=True)
class TextSplits:
    train: list[str]
    test: list[str]
    documents: tuple[int, int]  # train, test document counts


def bundled_documents() -> dict[str, str]:
    from pydoc_data.topics import topics

    return dict(topics)


def file_documents(paths: list[Path]) -> dict[str, str]:
    docs = {}
    for path in paths:
        try:
            docs[str(path)] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{path}: text file not found") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return docs


def sentences(document: str, *, min_words: int = 5, max_words: int = 60) -> list[str]:
    """Prose sentences of a document: paragraphs joined, code and headings (short lines) left out."""
    prose = []
    for paragraph in re.split(r"\n\s*\n", document):
        lines = paragraph.splitlines()
        if not lines or lines[0].startswith("   ") or set(lines[-1].strip()) <= set("*=-"):
            continue  # an indented code block, or a heading underline
        prose.append(" ".join(line.strip() for line in lines))
    out = []
    for paragraph in prose:
        for sentence in _SENTENCE_END.split(paragraph):
            words = sentence.split()
            if min_words <= len(words) <= max_words:
                out.append(" ".join(words))
    return out


def split_by_document(documents: dict[str, str], *, test_fraction: float = 0.2, seed: int = 0,
                      max_sentences: int | None = None) -> TextSplits:
    """Whole documents go to train or test; `max_sentences` caps each split (train first, by order)."""
    names = sorted(documents)
    random.Random(seed).shuffle(names)
    n_test = max(1, round(len(names) * test_fraction))
    if len(names) < 2:
        raise UserError(f"text: need at least 2 documents to split by document, got {len(names)}")
    test_docs, train_docs = names[:n_test], names[n_test:]
    train = [s for name in train_docs for s in sentences(documents[name])]
    test = [s for name in test_docs for s in sentences(documents[name])]
    if not train or not test:
        raise UserError("text: no sentences of 5 to 60 words found in the train or the test documents")
    if max_sentences:
        train, test = train[:max_sentences], test[:max_sentences]
    return TextSplits(train, test, (len(train_docs), len(test_docs)))
