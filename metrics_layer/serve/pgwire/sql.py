"""Just enough SQL lexing for the protocol layer.

* `split_statements` cuts a simple-query string at top-level semicolons, respecting quotes,
  E'' strings, quoted identifiers, dollar quotes and (nested) comments.
* `parse_command` recognises the statements the server implements itself: transaction
  control, cursors (DECLARE/FETCH/MOVE/CLOSE), DEALLOCATE and DISCARD. Everything else goes
  to the backend untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class Statement:
    text: str
    offset: int  # of `text` in the original string, so error positions can be shifted


_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][\w\x80-\U0010ffff]*)?\$")


def _is_ident_char(c: str) -> bool:
    return c.isalnum() or c in "_$" or c >= "\x80"


def _skip_quoted(sql: str, i: int, quote: str, backslash: bool = False) -> int:
    """Index just past the quoted literal starting at sql[i] (doubled quotes escape)."""
    i += 1
    n = len(sql)
    while i < n:
        c = sql[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return -1  # unterminated


def _skip_block_comment(sql: str, i: int) -> int:
    depth, i, n = 0, i, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return -1  # unterminated


class Unterminated(ValueError):
    """A comment, quoted string, quoted identifier or dollar quote runs to the end of the text."""

    def __init__(self, what: str, position: int):
        super().__init__(f"unterminated {what} at or near position {position + 1}")
        self.position = position + 1


def split_statements(sql: str) -> list[Statement]:
    """Top-level statements, stripped; statements holding only comments/whitespace are dropped.

    Raises Unterminated when a comment, quote or dollar quote is never closed (PostgreSQL's 42601)."""
    out: list[Statement] = []
    start, i, n = 0, 0, len(sql)
    has_content = False

    def emit(end: int) -> None:
        chunk = sql[start:end]
        stripped = chunk.lstrip()
        out.append(Statement(stripped.rstrip(), start + len(chunk) - len(stripped)))

    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            start_comment, i = i, _skip_block_comment(sql, i)
            if i < 0:
                raise Unterminated("/* comment", start_comment)
            continue
        if c == ";":
            if has_content:
                emit(i)
            start, has_content = i + 1, False
            i += 1
            continue
        if c.isspace():
            i += 1
            continue
        has_content = True
        if c == "'":
            start_quote, i = i, _skip_quoted(sql, i, "'")
            if i < 0:
                raise Unterminated("quoted string", start_quote)
        elif c == '"':
            start_quote, i = i, _skip_quoted(sql, i, '"')
            if i < 0:
                raise Unterminated("quoted identifier", start_quote)
        elif c == "$" and (m := _DOLLAR_TAG.match(sql, i)):
            # $tag$ ... $tag$; $1 parameters do not match (a tag cannot start with a digit).
            end = sql.find(m.group(), m.end())
            if end < 0:
                raise Unterminated("dollar-quoted string", i)
            i = end + len(m.group())
        elif _is_ident_char(c):
            # Whole words, so that a `$` or quote inside or after an identifier is not misread.
            word_start = i
            while i < n and _is_ident_char(sql[i]):
                i += 1
            if i < n and sql[i] == "'" and sql[word_start:i] in ("e", "E"):
                start_quote, i = i, _skip_quoted(sql, i, "'", backslash=True)  # E'...' honours backslashes
                if i < 0:
                    raise Unterminated("quoted string", start_quote)
        else:
            i += 1
    if has_content:
        emit(n)
    return out


# ---------------------------------------------------------------------------------------
# Server-implemented commands

_TOKEN = re.compile(
    r"""\s+|--[^\n]*(?:\n|$)|/\*.*?\*/
    |(?P<word>[A-Za-z_\x80-\U0010ffff][\w$\x80-\U0010ffff]*)
    |(?P<quoted>"(?:[^"]|"")*")
    |(?P<number>[+-]?\d+)
    |(?P<other>.)""",
    re.X | re.S,
)


@dataclass
class Token:
    value: str  # keywords/unquoted identifiers lowercased; quoted identifiers unescaped
    keyword: bool  # an unquoted word (could be a keyword)
    start: int
    end: int


def _tokens(sql: str, limit: int = 16) -> list[Token]:
    """The first `limit` tokens of `sql`, skipping whitespace and comments."""
    out: list[Token] = []
    pos = 0
    while len(out) < limit and pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if m is None:
            break
        pos = m.end()
        if m["word"]:
            out.append(Token(m["word"].lower(), True, m.start(), m.end()))
        elif m["quoted"]:
            out.append(Token(m["quoted"][1:-1].replace('""', '"'), False, m.start(), m.end()))
        elif m["number"]:
            out.append(Token(m["number"], False, m.start(), m.end()))
        elif m["other"]:
            out.append(Token(m["other"], False, m.start(), m.end()))
    return out


@dataclass
class Command:
    """A statement the server executes itself.

    kind: begin, commit, rollback, savepoint, release, rollback_to, declare, fetch, move,
    close, deallocate, discard. `tag` is the CommandComplete tag on success.
    """

    kind: str
    tag: str
    name: str | None = None  # savepoint, cursor or prepared statement; None for ALL
    chain: bool = False  # COMMIT/ROLLBACK AND CHAIN
    count: int | None = None  # FETCH/MOVE row count; None = ALL
    binary: bool = False  # DECLARE ... BINARY CURSOR
    hold: bool = False  # DECLARE ... WITH HOLD
    query: str = ""  # DECLARE ... FOR <query>
    query_offset: int = 0


class CommandSyntaxError(ValueError):
    def __init__(self, message: str, position: int | None = None, sqlstate: str = "42601"):
        super().__init__(message)
        self.position = position
        self.sqlstate = sqlstate


_TX_NOISE = ("work", "transaction")


def _chain(tokens: list[Token]) -> bool | None:
    """[AND [NO] CHAIN] after COMMIT/ROLLBACK: True/False, or None if something else follows."""
    words = [t.value for t in tokens]
    if words and words[0] in _TX_NOISE:
        words = words[1:]
    if not words:
        return False
    if words == ["and", "chain"]:
        return True
    if words == ["and", "no", "chain"]:
        return False
    return None


def parse_command(sql: str) -> Command | None:
    """The server-side command `sql` is, or None when it is for the backend."""
    tokens = _tokens(sql)
    if not tokens or not tokens[0].keyword:
        return None
    head, rest = tokens[0].value, tokens[1:]
    second = rest[0].value if rest and rest[0].keyword else None

    if head == "begin" or (head == "start" and second == "transaction"):
        return Command("begin", "BEGIN" if head == "begin" else "START TRANSACTION")
    if head in ("commit", "end"):
        chain = _chain(rest)
        return None if chain is None else Command("commit", "COMMIT", chain=chain)
    if head in ("rollback", "abort"):
        words = rest[1:] if second in _TX_NOISE else rest
        if head == "rollback" and words and words[0].keyword and words[0].value == "to":
            words = words[1:]
            if words and words[0].keyword and words[0].value == "savepoint":
                words = words[1:]
            return Command("rollback_to", "ROLLBACK", name=_name(words, sql))
        chain = _chain(rest)
        return None if chain is None else Command("rollback", "ROLLBACK", chain=chain)
    if head == "savepoint":
        return Command("savepoint", "SAVEPOINT", name=_name(rest, sql))
    if head == "release":
        words = rest[1:] if second == "savepoint" else rest
        return Command("release", "RELEASE", name=_name(words, sql))
    if head == "declare":
        return _parse_declare(rest, sql)
    if head in ("fetch", "move"):
        return _parse_fetch(head, rest, sql)
    if head == "close":
        if second == "all" and len(rest) == 1:
            return Command("close", "CLOSE CURSOR", name=None)
        return Command("close", "CLOSE CURSOR", name=_name(rest, sql))
    if head == "deallocate":
        words = rest[1:] if second == "prepare" else rest
        if len(words) == 1 and words[0].keyword and words[0].value == "all":
            return Command("deallocate", "DEALLOCATE ALL", name=None)
        return Command("deallocate", "DEALLOCATE", name=_name(words, sql))
    if head == "discard" and second in ("all", "plans", "sequences", "temp", "temporary"):
        return Command("discard", "DISCARD " + ("TEMP" if second == "temporary" else second.upper()), name=second)
    return None


def _name(words: list[Token], sql: str) -> str:
    if len(words) != 1 or not (words[0].keyword or sql[words[0].start] == '"'):
        raise CommandSyntaxError("syntax error: expected a single name", (words[0].start + 1) if words else len(sql))
    return words[0].value


def _parse_declare(rest: list[Token], sql: str) -> Command:
    # DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR [{WITH | WITHOUT} HOLD] FOR query
    if not rest:
        raise CommandSyntaxError("syntax error at end of input", len(sql))
    cmd = Command("declare", "DECLARE CURSOR", name=rest[0].value)
    words = iter(rest[1:])
    seen_cursor = False
    for tok in words:
        word = tok.value if tok.keyword else None
        if word == "binary":
            cmd.binary = True
        elif word in ("asensitive", "insensitive", "no", "scroll") and not seen_cursor:
            pass  # cursors are forward-only streams; backward FETCH is refused when used
        elif word == "cursor":
            seen_cursor = True
        elif word in ("with", "without") and seen_cursor:
            nxt = next(words, None)
            if nxt is None or nxt.value != "hold":
                break
            cmd.hold = word == "with"
        elif word == "for" and seen_cursor:
            cmd.query = sql[tok.end:].strip()
            cmd.query_offset = len(sql) - len(sql[tok.end:].lstrip())
            if not cmd.query:
                raise CommandSyntaxError("syntax error at end of input", len(sql))
            return cmd
        else:
            raise CommandSyntaxError(f"syntax error at or near \"{sql[tok.start:tok.end]}\"", tok.start + 1)
    raise CommandSyntaxError("syntax error in DECLARE: expected CURSOR ... FOR query", len(sql))


def _parse_fetch(head: str, rest: list[Token], sql: str) -> Command:
    # FETCH [NEXT | FORWARD [n | ALL] | n | ALL | <backward forms>] [FROM | IN] cursor
    tag = head.upper()
    words = list(rest)
    count: int | None = 1
    if words and words[0].keyword and words[0].value in ("next", "forward"):
        direction = words.pop(0).value
        if direction == "forward" and len(words) > 1:
            if words[0].value == "all" and words[0].keyword:
                count = None
                words.pop(0)
            elif _is_count(words[0].value):
                count = int(words.pop(0).value)
    elif words and words[0].keyword and words[0].value in ("prior", "first", "last", "absolute", "relative", "backward"):
        raise CommandSyntaxError(f"{tag} {words[0].value.upper()} is not supported: cursors are forward-only", None, "0A000")
    elif len(words) > 1 and words[0].keyword and words[0].value == "all":
        count = None
        words.pop(0)
    elif len(words) > 1 and _is_count(words[0].value):
        count = int(words.pop(0).value)
    if count is not None and count < 0:
        raise CommandSyntaxError(f"{tag} with a negative count is not supported: cursors are forward-only", None, "0A000")
    if words and words[0].keyword and words[0].value in ("from", "in"):
        words.pop(0)
    return Command(head, tag, name=_name(words, sql), count=count)


def _is_count(word: str) -> bool:
    """An optionally signed whole number in ASCII digits ("²".isdigit() is true, int("²") fails)."""
    digits = word.lstrip("+-")
    return digits.isascii() and digits.isdigit()
