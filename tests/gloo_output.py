"""Process output without gloo's connection notices.

gloo writes "[Gloo] Rank R is connected to N peer ranks. Expected number of connected
peer ranks is : N" in pieces from several threads, so the pieces of two notices
interleave and break across lines in any way. A line is kept when something is left
after removing every word a notice is made of.
"""

import re

NOTICE_WORDS = re.compile(r"\[Gloo\]|Rank|is connected to|peer ranks|Expected number of "
                          r"connected|is\s*:|\d+|[\s.:]")


def without_gloo_notices(text: str) -> list[str]:
    """The lines of `text` that are not (pieces of) gloo notices."""
    return [line for line in text.splitlines() if NOTICE_WORDS.sub("", line)]
