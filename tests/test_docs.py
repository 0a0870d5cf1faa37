"""The documentation is part of the code: every public parameter is documented, the
README's and the getting-started page's Python code runs as written, and the site builds
with ``mkdocs build --strict`` (broken links and unresolved API references fail)."""
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

import imnn
import imnn.lfi

ROOT = Path(__file__).resolve().parents[1]

# --- (a) every parameter of the public API is documented ----------------------------------

SECTION = re.compile(r"^(\s*)(Args|Arguments|Attributes):\s*$")
ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(\(.*\))?\s*:")


def documented_names(docstring: str, sections=("Args", "Arguments")) -> set[str]:
    """Names of the entries of a Google-style docstring's given sections.

    An entry is a line ``name: ...`` or ``name (type): ...`` indented one level below the
    section header; the section ends at the first non-blank line indented no deeper than the
    header.
    """
    names: set[str] = set()
    lines = inspect.cleandoc(docstring or "").splitlines()
    i = 0
    while i < len(lines):
        header = SECTION.match(lines[i])
        i += 1
        if not header or header.group(2) not in sections:
            continue
        indent, entry_indent = len(header.group(1)), None
        while i < len(lines):
            line = lines[i]
            depth = len(line) - len(line.lstrip())
            if line.strip() and depth <= indent:
                break
            if line.strip():
                entry_indent = depth if entry_indent is None else entry_indent
                match = ENTRY.match(line.strip())
                if depth == entry_indent and match:
                    # Python reads identifiers in NFKC form (a parameter written ϵ is ε).
                    names.add(unicodedata.normalize("NFKC", match.group(1)))
            i += 1
    return names


def public_objects():
    """(qualified name, object) for imnn.__all__ and imnn.lfi.__all__, modules left out."""
    for module in (imnn, imnn.lfi):
        for name in module.__all__:
            obj = getattr(module, name)
            if not inspect.ismodule(obj):
                yield f"{module.__name__}.{name}", obj


def undocumented_parameters(obj) -> list[str]:
    """The parameters of a function (or of a class's constructor) that its docstring does
    not document; ["<no docstring>"] when it has none."""
    if inspect.isclass(obj):
        docs = [obj.__doc__ or ""]
        if "__init__" in vars(obj):
            docs.append(obj.__init__.__doc__ or "")
        sections = ("Args", "Arguments", "Attributes")
    else:
        docs, sections = [obj.__doc__ or ""], ("Args", "Arguments")
    if not any(doc.strip() for doc in docs):
        return ["<no docstring>"]
    documented = set().union(*(documented_names(doc, sections) for doc in docs))
    parameters = inspect.signature(obj).parameters.values()
    return [p.name for p in parameters
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and p.name not in documented]


PUBLIC = dict(public_objects())


@pytest.mark.parametrize("name", list(PUBLIC))
def test_every_public_parameter_is_documented_in_its_docstring(name):
    missing = undocumented_parameters(PUBLIC[name])
    assert not missing, f"{name}: parameters not documented in an Args: section: {missing}"


def test_the_parser_reads_google_style_and_misses_nothing_else():
    def f(a, b, *args, θ_fid=None, **kwargs):
        """Summary.

        Args:
            a: one line,
              and a continuation that mentions c: not an entry.
            θ_fid (array (p,)): Unicode names count.

        Returns:
            b: not an argument.
        """
    assert documented_names(f.__doc__) == {"a", "θ_fid"}
    assert undocumented_parameters(f) == ["b"]

    class WithInit:
        """A class.

        Attributes:
            x: documented in the class docstring.
        """

        def __init__(self, x, ϵ):
            """Build it.

            Args:
                ϵ: documented in __init__'s, in the form that is not Python's own (ε).
            """
    assert undocumented_parameters(WithInit) == []
    assert undocumented_parameters(lambda q: q) == ["<no docstring>"]


# --- (b) the code of the README and of the getting-started page runs as written -------------

PAGES = ("README.md", "docs/getting-started.md")
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_namespaces: dict[tuple, dict] = {}  # blocks already run (a page may begin with another's)


def python_blocks(page: str) -> list[str]:
    return FENCE.findall((ROOT / page).read_text(encoding="utf-8"))


def test_pages_have_python_blocks():
    for page in PAGES:
        assert python_blocks(page), f"{page} has no ```python block"


@pytest.mark.slow
@pytest.mark.xdist_group("docs")  # one worker, so the getting-started page reuses the README's run
@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run_as_written(page, tmp_path, monkeypatch):
    """A page's blocks run in order in one fresh namespace, in an empty working directory,
    as a reader pasting them into one session would. Blocks that another page has run in
    the same order (the quick start) are not run twice."""
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(page)
    done = max((n for n in range(len(blocks) + 1) if tuple(blocks[:n]) in _namespaces),
               default=0)
    namespace = _namespaces.get(tuple(blocks[:done])) or {"__name__": "__main__"}
    for n in range(done, len(blocks)):
        code = compile(blocks[n], f"{page}, python block {n + 1}", "exec")
        exec(code, namespace)  # noqa: S102 - the documentation's own code
        _namespaces[tuple(blocks[:n + 1])] = namespace


# --- (c) the site builds with --strict --------------------------------------------------------

# The same command as `make docs`, which CI (.ci/run) runs right after `make test`: left out
# of make test (marked redundant) so that CI builds the site once; `pytest tests` runs it.
@pytest.mark.redundant
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                    or importlib.util.find_spec("mkdocstrings") is None,
                    reason="the docs extra (mkdocs, mkdocstrings) is not installed")
def test_site_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
