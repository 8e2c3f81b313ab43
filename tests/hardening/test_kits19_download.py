"""The KiTS19 download writes the layout the KiTS19 reader reads; a failed or stalled one names the URL or the
time limit and leaves nothing behind.
"""

from __future__ import annotations

import time
from pathlib import Path

from cli_errors import one_line_error, run_cli
from conftest import make_case, write_nifti


def _kits19_server_files(root: Path, cases: int = 2) -> tuple[str, str]:
    """A local stand-in for the KiTS19 imaging server and label repository: file:// URL templates."""
    for case in range(cases):
        image, label = make_case(seed=case)
        write_nifti(root / "imaging" / f"master_{case:05d}.nii.gz", image)
        write_nifti(root / "labels" / f"case_{case:05d}" / "segmentation.nii.gz", label)
    return (f"file://{root}/imaging/master_{{case:05d}}.nii.gz",
            f"file://{root}/labels/case_{{case:05d}}/segmentation.nii.gz")


def test_kits19_download_writes_the_official_layout_read_by_the_kits19_reader(tmp_path, capsys):
    imaging, labels = _kits19_server_files(tmp_path / "server")
    out = tmp_path / "dl" / "data"
    code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 2, "--imaging-url", imaging,
                        "--labels-url", labels, "--out", out)
    assert code == 0, err
    from hkd.data.readers import list_cases

    assert list_cases(out, "kits19") == {"00000": 8, "00001": 8}
    assert (out / "case_00001" / "imaging.nii.gz").read_bytes() == (
        tmp_path / "server" / "imaging" / "master_00001.nii.gz").read_bytes()


def test_a_failed_kits19_download_names_the_url_and_leaves_nothing(tmp_path, capsys):
    imaging, labels = _kits19_server_files(tmp_path / "server", cases=1)
    out = tmp_path / "dl" / "data"
    code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 2, "--imaging-url", imaging,
                        "--labels-url", labels, "--out", out)
    assert code == 1 and "case_00001/segmentation.nii.gz" in one_line_error(err)
    assert list((tmp_path / "dl").iterdir()) == []  # neither the folder nor its staging copy
    (tmp_path / "page.html").write_text("<html>not found</html>")
    code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 1, "--imaging-url",
                        f"file://{tmp_path}/page.html", "--labels-url", labels, "--out", out)
    assert code == 1 and "page.html is not a gzip-compressed NIfTI file" in one_line_error(err)
    code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 1, "--imaging-url",
                        "http://127.0.0.1:9/master_{case:05d}.nii.gz", "--labels-url", labels, "--out", out)
    assert code == 1 and "cannot reach 127.0.0.1:9" in one_line_error(err)
    assert list((tmp_path / "dl").iterdir()) == []


def test_kits19_download_ends_at_the_time_limit_and_removes_staging(tmp_path, capsys):
    import http.server
    import threading

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # a server that answers the headers, then sends the body too slowly
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(100):
                    time.sleep(0.1)
                    self.wfile.write(b"\x1f\x8b" + b"0" * 100)
            except OSError:  # the client gave up
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{{case}}.nii.gz"
    out = tmp_path / "dl" / "data"
    start = time.monotonic()
    try:
        code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 3, "--imaging-url", url,
                            "--labels-url", url, "--out", out, "--timeout", 0.5)
    finally:
        server.shutdown()
    assert time.monotonic() - start < 5
    assert code == 1 and "KiTS19 download: no result after 0.5 s" in one_line_error(err)
    assert list((tmp_path / "dl").iterdir()) == []
