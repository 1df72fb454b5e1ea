"""A small learned task-type classifier: hashed word n-grams and a multinomial logistic model.

Trained by ``sluice router train --task-types FILE`` on labelled prompts (JSON Lines of
``{"prompt": ..., "task_type": ...}``) and saved as an .npz of weights (no pickles: an
artifact is data, never code). Hashing needs no vocabulary, so the artifact is the weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.domain.errors import ConfigError

FORMAT = "sluice-task-types"
FORMAT_VERSION = 1
#: Hashed features: small enough to load in a millisecond, enough for short prompts.
N_FEATURES = 2 ** 14


def _vectorizer() -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=N_FEATURES, ngram_range=(1, 2), alternate_sign=False,
                             norm="l2", lowercase=True, token_pattern=r"(?u)\b\w+\b|[^\w\s]")


@dataclass
class TaskClassifier:
    """Weights of a multinomial logistic model over hashed n-grams of the prompt."""

    classes: tuple[str, ...]
    coef: np.ndarray
    intercept: np.ndarray
    meta: dict[str, Any]

    @property
    def version(self) -> str:
        """A hash of the weights: part of a decision's reason and the cache identity."""
        h = hashlib.sha256(json.dumps(list(self.classes)).encode())
        h.update(np.ascontiguousarray(self.coef).tobytes())
        h.update(np.ascontiguousarray(self.intercept).tobytes())
        return h.hexdigest()[:12]

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """Each text's most likely task type and its probability."""
        x = _vectorizer().transform(list(texts))
        logits = np.asarray(x @ self.coef.T) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return [(self.classes[int(b)], float(probs[i, int(b)])) for i, b in enumerate(best)]

    def save(self, path: str | Path) -> Path:
        """Write the .npz (and a readable .json of the metadata beside it)."""
        out = Path(path)
        out = out if out.suffix == ".npz" else out.with_suffix(".npz")
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, format=FORMAT, format_version=FORMAT_VERSION,
                    classes=list(self.classes), version=self.version)
        blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        np.savez_compressed(out, meta_json=blob, coef=self.coef, intercept=self.intercept)
        out.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return out


def train(prompts: Sequence[str], labels: Sequence[str], *, c: float = 4.0) -> TaskClassifier:
    """Fit on labelled prompts (at least two task types, each with an example)."""
    from sklearn.linear_model import LogisticRegression

    if len(prompts) != len(labels) or not prompts:
        raise ConfigError("task-type training needs labelled prompts, one label each")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ConfigError(f"task-type training needs at least two task types, got {classes}")
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(_vectorizer().transform(list(prompts)), list(labels))
    coef, intercept = np.asarray(model.coef_), np.asarray(model.intercept_)
    if len(classes) == 2:  # sklearn's binary form: one row for the second class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    meta = {"examples": len(prompts), "c": c,
            "counts": {k: list(labels).count(k) for k in classes}}
    return TaskClassifier(tuple(str(k) for k in model.classes_), coef.astype(np.float32),
                          intercept.astype(np.float32), meta)


def load_examples(path: str | Path) -> tuple[list[str], list[str]]:
    """Prompts and labels from JSON Lines ``{"prompt": ..., "task_type": ...}``."""
    prompts, labels = [], []
    src = Path(path)
    try:
        lines = src.read_text("utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read task-type examples {src}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            prompts.append(str(item["prompt"]))
            labels.append(str(item["task_type"]))
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{src}:{n}: each line must be a JSON object with 'prompt' and "
                              "'task_type'") from None
    return prompts, labels


def load_classifier(path: str | Path) -> TaskClassifier:
    """Read a classifier written by :meth:`TaskClassifier.save`."""
    src = Path(path)
    if not src.exists():
        raise ConfigError(f"task-type classifier {src} not found; train one with "
                          "`sluice router train --task-types FILE --out PATH`", path=str(src))
    try:
        with np.load(src, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta_json"]).decode())
            coef, intercept = data["coef"], data["intercept"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"task-type classifier {src} is unreadable ({exc}); retrain it",
                          path=str(src)) from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{src} is not a task-type classifier of this build; retrain it "
                          "with `sluice router train --task-types`", path=str(src))
    return TaskClassifier(tuple(meta["classes"]), coef, intercept, meta)
