"""Language identification by extension / file name, the configurable table, and the 18-language mix."""
from __future__ import annotations

import pytest

from tasks.language import (
    EXTENSION_TO_LANGUAGE,
    LANGUAGES,
    STARCODER2_3B_LANGUAGES,
    detect_language,
    normalise_language,
)

ONE_FILE_PER_MIX_LANGUAGE = {
    "python": "a/b.py", "java": "Main.java", "c++": "x.cc", "c": "x.c", "javascript": "app.mjs", "php": "i.php",
    "c#": "P.cs", "go": "main.go", "typescript": "ui.tsx", "sql": "q.sql", "ruby": "Rakefile", "rust": "lib.rs",
    "jupyter notebook": "nb.ipynb", "scala": "S.scala", "kotlin": "build.gradle.kts", "shell": "run.sh",
    "dart": "w.dart", "swift": "V.swift",
}


def test_the_18_languages_of_the_mix_are_recognised():
    assert len(STARCODER2_3B_LANGUAGES) == 18 and set(STARCODER2_3B_LANGUAGES) <= set(LANGUAGES)
    assert {lang: detect_language(p) for lang, p in ONE_FILE_PER_MIX_LANGUAGE.items()} == {
        lang: lang for lang in ONE_FILE_PER_MIX_LANGUAGE}


@pytest.mark.parametrize(
    "path, lang",
    [
        ("Makefile", "makefile"), ("GNUmakefile", "makefile"), ("rules.mk", "makefile"), ("Dockerfile", "dockerfile"),
        ("Dockerfile.dev", "dockerfile"), ("CMakeLists.txt", "cmake"), ("Gemfile", "ruby"), ("Jenkinsfile", "groovy"),
        ("a/B.LUA", "lua"), ("x.R", "r"), ("m.jl", "julia"), ("page.HTML", "html"), ("c.yml", "yaml"),
        ("README.md", "markdown"), ("g.dot", "graphviz (dot)"), ("o.owl", "web ontology language"),
        ("win\\path\\x.py", "python"),
        # not recognised: counted as unknown by the filter stage
        ("notes.txt", None), ("LICENSE", None), (".gitignore", None), ("archive.tar.gz", None), ("", None),
    ],
)
def test_filenames_and_extensions(path, lang):
    assert detect_language(path) == lang


def test_overrides_win_over_the_default_table():
    assert detect_language("inc/x.h") == "c"
    assert detect_language("inc/x.h", {".h": "c++"}) == "c++"
    assert detect_language("pkg/BUILD", {"BUILD": "Starlark"}) == "starlark"  # a file name, case-insensitive
    assert detect_language("Makefile", {"makefile": None}) is None  # mapped to unknown
    assert detect_language("notes.txt", {".txt": "text"}) == "text"
    assert detect_language("a.py", {".h": "c++"}) == "python"  # other entries untouched
    assert EXTENSION_TO_LANGUAGE[".h"] == "c"  # overrides do not leak into the default table


def test_normalise_language():
    assert normalise_language(" Python ") == "python"
    assert normalise_language("C++") == "c++"
    assert [normalise_language(x) for x in (None, float("nan"), "", "  ")] == [None] * 4
