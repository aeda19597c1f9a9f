"""The repository stands alone: every document a source file or doc cites is in the repository."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("hiergen", "runtime", "training", "export", "calibration", "tests", "models")
           for p in (ROOT / d).rglob("*.py")] + list((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def test_every_cited_markdown_document_exists():
    missing = []
    for src in SOURCES:
        if src.is_relative_to(ROOT / "tests"):         # tests name temporary files such as e.md
            continue
        for ref in re.findall(r"[\w./-]*[\w-]+\.md\b", src.read_text()):
            ref = ref.lstrip("./")
            candidates = [ROOT / ref, src.parent / ref, ROOT / "docs" / ref]
            if not any(c.is_file() for c in candidates):
                missing.append(f"{src.relative_to(ROOT)} cites {ref}")
    assert not missing, "\n".join(missing)


def test_no_source_points_outside_the_repository():
    outside = [f"{p.relative_to(ROOT)}" for p in SOURCES if p != Path(__file__) and "../" + "shared" in p.read_text()]
    assert not outside, outside
