"""A linear baseline for the pydoc classes: logistic regression on character n-grams.

Fits scikit-learn's ``LogisticRegression`` (defaults) to TF-IDF features of character 1- to
5-grams of the training windows of ``jaxebm.data.text.load_pydoc_classes``, with every training
label and with ``k`` labels per class (``few_labels``, seeds 0-4), and prints test accuracy as a
Markdown table (about two minutes on two cores):

  python scripts/pydoc_classes_baseline.py --lengths 64 128
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from jaxebm.data import text


def accuracy(features, labels, test_features, test_labels) -> float:
    model = LogisticRegression(max_iter=2000).fit(features, labels)
    return float(np.mean(model.predict(test_features) == test_labels))


def row(length: int, ks: list[int], seeds: int) -> str:
    tokenizer = text.pydoc_tokenizer()
    train, test = (text.load_pydoc_classes(s, length=length) for s in ("train", "test"))
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 5), sublinear_tf=True)
    x = vectorizer.fit_transform([tokenizer.decode(w) for w in train["tokens"]])
    x_test = vectorizer.transform([tokenizer.decode(w) for w in test["tokens"]])
    y, y_test = train["y"], test["y"]
    cells = [
        f"{np.bincount(y_test).max() / len(y_test):.1%}",
        f"{accuracy(x, y, x_test, y_test):.1%}",
    ]
    for k in ks:
        picks = [text.few_labels(y, k, seed=seed)[0] for seed in range(seeds)]
        scores = [accuracy(x[i], y[i], x_test, y_test) for i in picks]
        cells.append(f"{np.mean(scores):.1%} ± {np.std(scores):.1%}")
    return f"| {length} | {len(y)} / {len(y_test)} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    few = " | ".join(f"{k} per class" for k in args.ks)
    print(f"| Length | Train / test windows | Majority class | All labels | {few} |")
    print("|---" * (4 + len(args.ks)) + "|")
    for length in args.lengths:
        print(row(length, args.ks, args.seeds), flush=True)


if __name__ == "__main__":
    main()
