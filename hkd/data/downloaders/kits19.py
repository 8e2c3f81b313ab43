"""Getting KiTS19 without an account: each labelled case's segmentation and imaging over HTTPS.

The official repository (github.com/neheller/kits19) holds the segmentations under ``data/`` and
fetches the imaging from a public server (``starter_code/get_imaging.py``); no login is needed. The
data are licensed CC BY-NC-SA 4.0 (non-commercial use, attribution, share alike). This module
writes the cases in the official layout, ``case_XXXXX/imaging.nii.gz`` and
``segmentation.nii.gz``, read back by :mod:`hkd.data.readers.kits19_lits`.

The download follows the rules of every downloader (:mod:`hkd.data.downloaders`): the whole download
is abandoned after ``timeout`` seconds; it is written to a staging folder that replaces ``out_dir`` only
when every file arrived, so a failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from hkd.data import kits19_lits_files as files
from hkd.data.downloaders import DOWNLOAD_TIMEOUT, Deadline, check_timeout, time_limit
from hkd.errors import DataError
from hkd.io import atomic_dir

log = logging.getLogger(__name__)

IMAGING_URL = "https://kits19.sfo2.digitaloceanspaces.com/master_{case:05d}.nii.gz"
LABELS_URL = "https://github.com/neheller/kits19/raw/master/data/" + files.kits19_label("{case:05d}")
LABELLED_CASES = 210  # case_00000 .. case_00209 have segmentations; 210 .. 299 are the unlabelled test cases
REQUEST_TIMEOUT = 60.0  # seconds without an answer before one request fails
_GZIP_MAGIC = b"\x1f\x8b"


def _fetch(url: str, target: Path) -> None:
    """Copy ``url`` to ``target``; DataError naming the URL on any failure or a non-gzip answer."""
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        raise DataError(f"KiTS19 download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        host = urlsplit(url).netloc
        if not host:  # a file:// URL
            raise DataError(f"KiTS19 download of {url} failed: {reason}") from None
        raise DataError(f"cannot reach {host} while downloading {url} ({reason}); check the network "
                        "connection") from None
    with open(target, "rb") as f:
        if f.read(2) != _GZIP_MAGIC:
            raise DataError(f"KiTS19 download of {url} is not a gzip-compressed NIfTI file (an error page or a "
                            "git-lfs pointer?)")


def download(out_dir: str | Path, cases: int = LABELLED_CASES, imaging_url: str = IMAGING_URL,
             labels_url: str = LABELS_URL, timeout: float | None = DOWNLOAD_TIMEOUT) -> Path:
    """Download the labelled KiTS19 cases 0..``cases``-1 into ``out_dir`` (the official layout).

    ``imaging_url`` and ``labels_url`` are templates with ``{case}`` (the case number).
    """
    check_timeout(timeout)
    if not 1 <= cases <= LABELLED_CASES:
        raise DataError(f"data.kits19.cases: {cases} must lie in 1..{LABELLED_CASES} (the labelled cases)")
    out_dir = Path(out_dir)
    try:
        with time_limit(timeout, "KiTS19 download"), atomic_dir(out_dir) as tmp:
            for case in range(cases):
                number = f"{case:0{files.KITS19_DIGITS}d}"
                (tmp / files.kits19_image(number)).parent.mkdir()
                _fetch(labels_url.format(case=case), tmp / files.kits19_label(number))
                _fetch(imaging_url.format(case=case), tmp / files.kits19_image(number))
                log.info("case_%05d downloaded (%d of %d)", case, case + 1, cases)
    except Deadline as exc:
        raise DataError(str(exc)) from None
    return out_dir


# --- hkd download --source kits19 -------------------------------------------------------------------
def add_arguments(group) -> None:
    group.add_argument("--cases", type=int, default=LABELLED_CASES,
                       help=f"kits19: labelled cases 0..N-1 to download (default {LABELLED_CASES})")
    group.add_argument("--imaging-url", default=IMAGING_URL, help="kits19: imaging URL template with {case} "
                       "(default: official)")
    group.add_argument("--labels-url", default=LABELS_URL,
                       help="kits19: segmentation URL template with {case} (default: official)")


def run(args) -> str:
    """Download the labelled cases into ``args.out``; returns what was downloaded."""
    download(args.out, args.cases, args.imaging_url, args.labels_url, timeout=args.timeout)
    return f"{args.cases} KiTS19 cases"
