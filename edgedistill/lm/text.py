"""Text for language-model distillation: local files, or the English prose bundled with Python.

Python ships its reference manual's topics (`pydoc_data.topics`, ~79 documents, ~465 k characters) for
`help()`, and the docstrings of its standard library (~525 modules, ~1.6 M characters, read from the
source with `ast`, nothing imported): real English that needs no download. Sentences are split by
document, so no test sentence comes from a document the student trained on.
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


def stdlib_documents() -> dict[str, str]:
    """The docstrings of each standard-library module (tests and IDLE left out), parsed, never imported."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    docs = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p.startswith("test") or p in ("idlelib", "site-packages", "dist-packages", "lib2to3") for p in parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a file this Python cannot parse (another version's grammar) has nothing for us
        strings = [ast.get_docstring(node) for node in ast.walk(tree)
                   if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        text = "\n\n".join(s for s in strings if s)
        if text:
            docs["stdlib:" + "/".join(parts)] = text
    return docs


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


def load_texts(spec, seed: int) -> TextSplits:
    """The training and held-out sentences a pipeline's `data` (kind text) names, split by document.

    Bundled text holds out pydoc topics only; the stdlib's docstrings, when asked for, join the training
    side, so the held-out sentences are the same with or without them.
    """
    splits = _split(spec, seed)
    train, train_docs = splits.train, splits.documents[0]
    if not spec.files and spec.stdlib_docstrings:
        extra = stdlib_documents()
        train = train + [s for doc in extra.values() for s in sentences(doc)]
        train_docs += len(extra)
    if spec.max_train_texts:
        train = random.Random(seed).sample(train, min(len(train), spec.max_train_texts))
    return TextSplits(train, splits.test[:spec.max_test_texts], (train_docs, splits.documents[1]))


def held_out_texts(spec, seed: int) -> list[str]:
    """Only the held-out sentences of `load_texts`, without reading the training side's extra text."""
    return _split(spec, seed).test[:spec.max_test_texts]


def _split(spec, seed: int) -> TextSplits:
    documents = file_documents(spec.files) if spec.files else bundled_documents()
    return split_by_document(documents, test_fraction=spec.test_fraction, seed=seed)
