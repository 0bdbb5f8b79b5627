"""The hardened entry points for untrusted input, one per format (BLUEPRINT §8.4).

Every connector parses files through these: sizes are bounded, encodings and
separators are checked rather than guessed silently, XML never resolves
entities or fetches anything, and errors say what is wrong and where without
echoing values (which may be identifiers).
"""


class InputError(ValueError):
    """Untrusted input refused as a whole: ``reason`` is for people (it never quotes
    values from the input), ``line`` is 1-based, 0 when unknown."""

    def __init__(self, reason: str, *, line: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


class InputChanged(InputError):
    """The input changed while it was being read (a file rewritten between two passes):
    what was read of it may be from another version; read it again later."""
