#!/usr/bin/env python3
"""The fixtures' shared tokenizer: a byte-level BPE (vocab 512) trained with
`tokenizers` on the training text (docstrings of CPython standard-library
modules, PSF License 2.0, read from the installed Python; plus a few short
ChatML exchanges written for this project), with special tokens
<|endoftext|> (0), <|im_start|> (1), <|im_end|> (2) and a ChatML chat
template in tokenizer_config.json.

    python scripts/make_tokenizer.py                 # write fixtures/tokenizer.json if missing
    python scripts/make_tokenizer.py --check         # retrain and compare with the committed one
    python scripts/make_tokenizer.py --install DIR   # copy tokenizer.json + tokenizer_config.json into DIR

make_fixtures.py imports corpus() and the save helpers from here. The
committed fixtures/tokenizer.json is the source of truth (the fixtures'
embeddings were trained against its ids); --check says whether this Python's
docstrings still reproduce it.
"""
import argparse
import importlib
import inspect
import json
import pathlib
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
VOCAB = 512
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# CPython standard-library modules whose docstrings make the training text (PSF License 2.0).
MODULES = ["collections", "itertools", "functools", "json", "re", "string", "textwrap", "heapq", "bisect",
           "random", "statistics", "fractions", "decimal", "datetime", "calendar", "pathlib", "argparse",
           "logging", "unittest", "typing", "dataclasses", "contextlib", "shutil", "tempfile", "csv"]
CHATS = [
    ("What does the heapq module provide?", "Heap queue algorithms, also known as the priority queue algorithm."),
    ("What is a deque?", "A list-like sequence optimized for data accesses near its endpoints."),
    ("What does bisect do?", "Bisection algorithms for keeping a list in sorted order."),
]


def docstrings() -> str:
    # The committed tokenizer and weights were made with torch and transformers
    # already imported, and importing them replaces one private function of
    # `typing` (_collect_parameters, whose docstring is part of this text):
    # import them first so the text is the same whoever calls this.
    import torch  # noqa: F401
    import transformers  # noqa: F401
    parts = []
    for name in MODULES:
        mod = importlib.import_module(name)
        parts.append(inspect.getdoc(mod) or "")
        for _, obj in sorted(vars(mod).items()):
            doc = inspect.getdoc(obj) if (inspect.isfunction(obj) or inspect.isclass(obj)) else None
            if doc:
                parts.append(doc)
    return "\n\n".join(p for p in parts if p)


def chat_text(user, answer):
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"


def corpus() -> str:
    """The whole training text: docstrings, then the ChatML exchanges repeated 20 times."""
    return docstrings() + "\n\n" + "".join(chat_text(q, a) for q, a in CHATS) * 20


def train_tokenizer(text: str, vocab: int = VOCAB) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer)
    return tok


def tokenizer_config() -> dict:
    return {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "bos_token": None, "chat_template": CHAT_TEMPLATE, "model_max_length": 4096}


def save_tokenizer(tok: Tokenizer, out: pathlib.Path):
    """tokenizer.json and tokenizer_config.json (with the chat template) beside a model."""
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2))


def shared_tokenizer(text: str | None = None) -> Tokenizer:
    """The committed tokenizer, or a freshly trained one if none is committed yet."""
    path = FIX / "tokenizer.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    tok = train_tokenizer(text if text is not None else corpus())
    FIX.mkdir(exist_ok=True)
    tok.save(str(path))
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="retrain and compare with fixtures/tokenizer.json")
    ap.add_argument("--install", action="append", default=[], metavar="DIR", help="save tokenizer files into DIR")
    args = ap.parse_args()
    if args.check:
        fresh = json.loads(train_tokenizer(corpus()).to_str())
        committed = json.loads((FIX / "tokenizer.json").read_text())
        same = fresh == committed
        print("retrained tokenizer", "matches" if same else "DIFFERS FROM", "fixtures/tokenizer.json")
        sys.exit(0 if same else 1)
    tok = shared_tokenizer()
    for d in args.install:
        p = pathlib.Path(d)
        p.mkdir(parents=True, exist_ok=True)
        save_tokenizer(tok, p)
        print("wrote tokenizer to", p)
    print(f"vocab {tok.get_vocab_size()}, specials", {s: tok.token_to_id(s) for s in SPECIALS})


if __name__ == "__main__":
    main()
