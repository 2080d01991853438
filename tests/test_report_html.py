"""report.html: self-contained, every section present, figures embedded, user text escaped; rebuild and compare."""

from __future__ import annotations

import json
from html import escape
from html.parser import HTMLParser

import pytest

from edgedistill.report.figures import has_external_reference, pareto_front
from edgedistill.report.html import SECTIONS
from tests.conftest import cli, tiny_pipeline_dict, write_pipeline


class Structure(HTMLParser):
    """Collects what the report tests check: section ids, inline SVGs, scripts, external references."""

    def __init__(self):
        super().__init__()
        self.sections, self.svgs, self.scripts, self.external, self.text = [], 0, 0, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "svg":
            self.svgs += 1
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value.startswith(("http:", "https:", "//")):
                self.external.append(value)
        if tag == "link":
            self.external.append(str(attrs))

    def handle_data(self, data):
        self.text.append(data)


def parse(path):
    parser = Structure()
    parser.feed(path.read_text())
    return parser


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory):
    """A tiny run whose pipeline name carries markup: it must come out as text."""
    folder = tmp_path_factory.mktemp("html")
    path = write_pipeline(folder / "p.yaml", tiny_pipeline_dict(name="<script>alert(1)</script>"))
    proc = cli("run", path, "--out", folder / "run", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder / "run"


def test_every_section_and_figure_is_embedded(evil_run):
    page = parse(evil_run / "report" / "report.html")
    assert page.sections == list(SECTIONS)
    assert page.svgs >= 4  # accuracy-latency, sizes, training curves, latency distributions
    assert page.external == [] and page.scripts == 0
    html = (evil_run / "report" / "report.html").read_text()
    assert "<!DOCTYPE svg" not in html and "<?xml" not in html


def test_user_strings_are_escaped(evil_run):
    html = (evil_run / "report" / "report.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" in "".join(parse(evil_run / "report" / "report.html").text)


def test_results_schema_round_trip_and_rebuild(evil_run, tmp_path):
    before = json.loads((evil_run / "report" / "results.json").read_text())
    assert before["schema_version"] == 1
    (evil_run / "report" / "report.html").unlink()
    proc = cli("report", evil_run, "--format", "html", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    after = json.loads((evil_run / "report" / "results.json").read_text())
    for key in ("pipeline", "device", "teacher", "student", "artifacts", "budgets", "verdict", "stages"):
        assert after[key] == before[key], key
    assert parse(evil_run / "report" / "report.html").sections == list(SECTIONS)


def test_compare_two_runs(evil_run, tmp_path):
    proc = cli("report", "--compare", evil_run, evil_run, "--out", tmp_path / "cmp")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert len(rows) == 2 and rows[0]["device"] == "raspberry-pi-4"
    page = parse(tmp_path / "cmp" / "compare.html")
    assert page.svgs == 1 and page.external == [] and page.scripts == 0
    assert "| raspberry-pi-4 |" in (tmp_path / "cmp" / "compare.md").read_text()


def test_compare_runs_in_folders_named_like_tex(evil_run, tmp_path):
    """Folder names become chart labels: '$', '^' and '_' are drawn as written (matplotlib would read '$x^$' as
    TeX math, and an unbalanced '$' as an error)."""
    import shutil

    odd = tmp_path / "run $\\nocommand^{$ a_b"
    shutil.copytree(evil_run, odd)
    proc = cli("report", "--compare", evil_run, odd, "--out", tmp_path / "cmp")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert odd.name in "".join(parse(tmp_path / "cmp" / "compare.html").text)


def test_the_report_reads_cleanly(evil_run):
    """What a reader saw wrong (checked by eye in headless Chromium, then pinned here): point labels piled into
    one smear, TeX in tick labels, an empty header row, a caption promising shading that was not drawn,
    Markdown and HTML showing different columns."""
    from edgedistill.report.text import MODEL_COLUMNS

    html = (evil_run / "report" / "report.html").read_text()
    markdown = (evil_run / "report" / "report.md").read_text()
    shown = "".join(parse(evil_run / "report" / "report.html").text)  # text drawn, not SVG comments
    assert "mathdefault" not in shown and "<th></th>" not in html
    assert "shading marks the distillation phases" not in html  # the tiny run has one phase: nothing shaded
    assert "| " + " | ".join(c.replace("|", "\\|") for c in MODEL_COLUMNS) + " |" in markdown  # pipes escaped
    assert all(f"<th>{escape(c)}</th>" in html for c in MODEL_COLUMNS)
    results = json.loads((evil_run / "report" / "results.json").read_text())
    chart = html[html.index("<section id=\"figures\">"):html.index("</figure>")]
    for art in results["artifacts"]:  # each artifact named once, in the legend, not once per point label
        assert chart.count(f"{art['format']} {art['precision']}<") == 1


def test_report_command_errors(tmp_path):
    proc = cli("report", tmp_path)
    assert proc.returncode == 2 and "not a run folder (no pipeline.resolved.yaml)" in proc.stderr
    proc = cli("report", tmp_path, "--format", "pdf")
    assert proc.returncode == 2 and "unknown report format 'pdf'" in proc.stderr
    proc = cli("report", "--compare", tmp_path)
    assert proc.returncode == 2 and "needs two or more" in proc.stderr


def test_failed_stage_and_missing_benchmark_still_render(tmp_path):
    # A missing benchmark: the runner is given 10 ms and times out.
    path = write_pipeline(tmp_path / "p.yaml", tiny_pipeline_dict(bench={"timeout_s": 0.01}))
    assert cli("run", path, "--out", tmp_path / "nobench", cwd=tmp_path).returncode == 0
    page = parse(tmp_path / "nobench" / "report" / "report.html")
    text = "".join(page.text)
    assert page.sections == list(SECTIONS)
    assert "CANNOT TELL" in text and "timed out" in text and "No latency distributions" in text

    # A failed stage: the teacher checkpoint does not match the architecture the pipeline names.
    from edgedistill.models import build_model
    from edgedistill.models.io import save_weights

    save_weights(build_model("resnet", width=0.5, depth=0.5, in_channels=1, num_classes=10, input_hw=(8, 8)),
                 tmp_path / "wrong.safetensors")
    spec = tiny_pipeline_dict()
    spec["teacher"] = {"kind": "checkpoint", "path": "wrong.safetensors", "family": "resnet", "width": 1.0}
    proc = cli("run", write_pipeline(tmp_path / "q.yaml", spec), "--out", tmp_path / "failed", cwd=tmp_path)
    assert proc.returncode == 2 and "weights do not match the architecture" in proc.stderr
    page = parse(tmp_path / "failed" / "report" / "report.html")
    text = "".join(page.text)
    assert page.sections == list(SECTIONS)
    assert "Distillation did not complete" in text and "weights do not match" in text
    assert "No accuracy-latency chart" in text and "No training curves" in text


def test_pareto_front():
    points = [(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (0.5, 80.0)]
    assert pareto_front(points) == [3, 0, 1]


def test_external_reference_detector():
    assert has_external_reference('<image href="https://example.com/x.png"/>')
    assert not has_external_reference('<svg xmlns="http://www.w3.org/2000/svg"></svg>')
