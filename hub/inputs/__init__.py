"""The hardened entry points for untrusted input, one per format (BLUEPRINT §8.4).

Every connector parses files through these: sizes are bounded, encodings and
separators are checked rather than guessed silently, XML never resolves
entities or fetches anything, and errors say what is wrong and where without
echoing values (which may be identifiers).
"""
