"""The README's reading-order table says how long each file is: those counts must be true."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READING = ("schedule.py", "data.py", "model.py", "kernels/reference.py", "train.py")


def lines(path: str) -> int:
    p = ROOT / path
    files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return sum(len(f.read_text().splitlines()) for f in files)


def table_rows(readme: str):
    """(path, count) for every row of the reading-order table: | # | `path` | what | count |"""
    for row in re.findall(r"^\|[^|\n]*\|[^|\n]*`([^`|\n]+)`[^|\n]*\|[^\n]*\| (\d[\d,]*) \|$", readme, re.M):
        yield row[0], int(row[1].replace(",", ""))


def test_reading_order_line_counts_are_true():
    readme = (ROOT / "README.md").read_text()
    rows = dict(table_rows(readme))
    assert set(READING) <= set(rows) and "harness/" in rows, sorted(rows)
    wrong = {path: (said, lines(path)) for path, said in rows.items() if said != lines(path)}
    assert not wrong, f"README says (said, true): {wrong}"  # update the table when a file changes
    said = re.search(r"reading path.*? is ([\d,]+) lines", readme, re.S)
    assert said and int(said.group(1).replace(",", "")) == sum(lines(p) for p in READING)


if __name__ == "__main__":      # python tests/test_readme.py: rewrite the counts after a change
    text = (ROOT / "README.md").read_text()
    for path, said in table_rows(text):
        text = re.sub(rf"(`{re.escape(path)}`[^\n]*\| ){said:,}( \|)$", rf"\g<1>{lines(path):,}\g<2>", text, flags=re.M)
    text = re.sub(r"(reading path.*? is )[\d,]+( lines)", rf"\g<1>{sum(lines(p) for p in READING):,}\g<2>", text,
                  count=1, flags=re.S)
    (ROOT / "README.md").write_text(text)
