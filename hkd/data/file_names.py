"""A dataset layout's file names as a pattern: the one way the naming modules (``rawdata_files``,
``kits19_lits_files``) turn a name function into what their reader matches. Standard library only."""

from __future__ import annotations

import re


def pattern(name_of) -> re.Pattern:
    """The names ``name_of(number, ending)`` gives, as a pattern on a relative POSIX path (or a bare file name)
    anywhere below the root: group 1 the number, group 2 ``.gz`` or nothing."""
    prefix, _, suffix = name_of("\0", "\1").partition("\0")
    between = suffix.partition("\1")[0]
    return re.compile(rf"(?:^|/){re.escape(prefix)}(\d+){re.escape(between)}\.nii(\.gz)?$")
