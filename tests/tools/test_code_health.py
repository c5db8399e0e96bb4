"""tools/code_health.py on tiny planted packages: a circle and an undocumented definition must be found,
a clean package must pass."""
import os
import textwrap

from tools import code_health


def _package(root, files: dict) -> str:
    """Writes {relative path: source} under root/pkg and returns the package folder."""
    for rel, source in files.items():
        path = os.path.join(root, "pkg", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(source))
    return os.path.join(root, "pkg")


CLEAN = {
    "__init__.py": '"""Top."""\nfrom .a import f\n',
    "a.py": '''\
        """A."""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from pkg.sub import b   # never runs: no edge


        def f():
            """Documented."""
            from pkg.sub.b import g  # function level: no edge by default
            return g


        class _Private:
            def undocumented_but_private(self):
                pass
        ''',
    "sub/__init__.py": '"""Sub."""\n',
    "sub/b.py": '''\
        """B."""
        import pkg.a


        class K:
            """Documented class."""

            def __init__(self):
                pass

            @property
            def value(self):
                """A documented property."""
                return 1

            @value.setter
            def value(self, v):
                pass


        def g():
            """Documented."""
        ''',
}


def test_clean_package_passes(tmp_path, capsys):
    assert code_health.main(["--package", _package(str(tmp_path), CLEAN)]) == 0
    out = capsys.readouterr().out
    assert "import circles (module-level imports, 4 modules" in out and "): 0" in out
    assert "without a docstring: 0 of 4" in out  # f, K, K.value, g; nothing private, no setter, no dunder


def test_function_level_import_circle_found_only_when_asked(tmp_path, capsys):
    package = _package(str(tmp_path), CLEAN)
    assert code_health.main(["--package", package, "--function-imports"]) == 1
    assert "  pkg.a -> pkg.sub.b -> pkg.a\n" in capsys.readouterr().out


def test_planted_circle_and_undocumented_definitions_found(tmp_path, capsys):
    files = dict(CLEAN)
    files["sub/__init__.py"] = '"""Sub, whose __init__ imports back: a circle through a parent package."""\n' \
                               'from pkg.c import h\n'
    files["c.py"] = '''\
        """C."""
        from .sub.b import g


        def h():
            return g


        class Undocumented:
            def method(self):
                pass

            def _private(self):
                pass
        '''
    package = _package(str(tmp_path), files)
    assert code_health.main(["--package", package]) == 1
    out = capsys.readouterr().out
    # pkg.c imports pkg.sub.b, which runs pkg.sub first; pkg.sub imports pkg.c.
    assert "import circles (module-level imports, 5 modules" in out
    assert "): 1\n  pkg.c -> pkg.sub -> pkg.c\n" in out
    assert "without a docstring: 3 of 7" in out
    for line in ("\n  pkg/c.py:5: function h\n", "\n  pkg/c.py:9: class Undocumented\n",
                 "\n  pkg/c.py:10: method Undocumented.method\n"):
        assert line in out


def test_graph_resolves_relative_and_from_imports(tmp_path):
    modules = code_health.load_package(_package(str(tmp_path), CLEAN))
    graph = code_health.build_import_graph(modules)
    # `from .a import f` in pkg/__init__ names a function, so the edge goes to the module pkg.a;
    # pkg.sub.b's `import pkg.a` does not re-run pkg (its own parent, already being imported).
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": set(), "pkg.sub": set(), "pkg.sub.b": {"pkg.a"}}


LAZYDET = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "lazydet")


def test_lazydet_holds_the_line():
    """No import circle in lazydet (module- or function-level), and every public definition documented."""
    modules = code_health.load_package(LAZYDET)
    assert code_health.import_circles(code_health.build_import_graph(modules)) == []
    assert code_health.import_circles(code_health.build_import_graph(modules, function_imports=True)) == []
    missing = [f"{path}:{line} {name}" for path, line, _, name, documented in code_health.public_definitions(modules)
               if not documented]
    assert missing == []
