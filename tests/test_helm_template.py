"""The Go-template subset Helm charts are written in: each construct, Go's printing rules, the functions,
and the refusal of what is not supported (never a silently different rendering)."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from bundler.openshift.helm.goeval import TemplateSet
from bundler.openshift.helm.gofuncs import FUNCTIONS, SPECIAL
from bundler.openshift.helm.gotemplate import TemplateError, TemplateSyntaxError, TemplateUnsupportedError
from bundler.openshift.helm.values import load_yaml


def render(source: str, data: Optional[Any] = None, **extra: str) -> str:
    tset = TemplateSet(FUNCTIONS, SPECIAL)
    for name, text in extra.items():
        tset.add_file(name, text)
    tset.add_file("t.yaml", source)
    return tset.execute("t.yaml", data if data is not None else {})


V = {"Values": load_yaml("image:\n  repository: quay.io/org/app\n  tag: 1.10\nreplicas: 1000000\nlist: [a, b, c]\nmap: {z: 1, a: 2}\nempty: ''\nflag: false\n")}


@pytest.mark.parametrize(
    "source, expected",
    [
        ("plain text", "plain text"),
        ("{{ .Values.image.repository }}:{{ .Values.image.tag }}", "quay.io/org/app:1.1"),  # YAML 1.10 is float64 1.1 in Helm
        ("{{ .Values.replicas }}", "1e+06"),
        ("{{ .Values.missing }}|", "|"),
        ("a  {{- /* comment */ -}}  b", "ab"),
        ("a\n  {{- \"x\" }}\n  {{- \"y\" -}}\n  b", "axyb"),
        ("{{ if .Values.flag }}T{{ else if .Values.empty }}E{{ else }}F{{ end }}", "F"),
        ("{{ if and .Values.list (not .Values.flag) }}yes{{ end }}", "yes"),
        ("{{ or .Values.empty .Values.missing \"fallback\" }}", "fallback"),
        ("{{ range .Values.list }}{{ . }},{{ end }}", "a,b,c,"),
        ("{{ range $i, $v := .Values.list }}{{ $i }}={{ $v }} {{ end }}", "0=a 1=b 2=c "),
        ("{{ range $k, $v := .Values.map }}{{ $k }}:{{ $v }} {{ end }}", "a:2 z:1 "),  # maps in sorted key order
        ("{{ range .Values.nothing }}x{{ else }}none{{ end }}", "none"),
        ("{{ range .Values.list }}{{ if eq . \"b\" }}{{ continue }}{{ end }}{{ if eq . \"c\" }}{{ break }}{{ end }}{{ . }}{{ end }}", "a"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        ("{{ with .Values.image }}{{ .repository }}{{ end }}", "quay.io/org/app"),
        ("{{ with .Values.missing }}x{{ else }}no{{ end }}", "no"),
        ("{{ $x := 1 }}{{ range .Values.list }}{{ $x = add $x 1 }}{{ end }}{{ $x }}", "4"),
        ("{{ $.Values.image.repository }}", "quay.io/org/app"),
        ("{{ (index .Values.list 1) | upper }}", "B"),
        ("{{ (dict \"a\" \"b\").a }}", "b"),
        ("{{ .Values.image.repository | default \"x\" | quote }}", '"quay.io/org/app"'),
        ("{{ .Values.empty | default \"d\" }}", "d"),
        ("{{ squote \"a\" }} {{ printf \"%s-%d-%v\" \"n\" 3 true }} {{ print 1 2 }}", "'a' n-3-true 1 2"),
        ("{{ toYaml .Values.map | nindent 2 }}", "\n  a: 2\n  z: 1"),
        ("{{ toJson .Values.list }}", '["a","b","c"]'),
        ("{{ \"  x  \" | trim }}|{{ trimSuffix \"-\" \"a-\" }}|{{ trimPrefix \"v\" \"v1\" }}|{{ trunc 3 \"abcdef\" }}", "x|a|1|abc"),
        ("{{ replace \".\" \"-\" \"a.b\" }} {{ lower \"A\" }} {{ title \"hello world\" }}", "a-b a Hello World"),
        ("{{ lt 1 2 }} {{ ge 2 2 }} {{ ne \"a\" \"b\" }} {{ eq 1 2 1 }}", "true true true true"),
        ("{{ len .Values.list }} {{ hasKey .Values.map \"a\" }} {{ get .Values.map \"z\" }} {{ empty .Values.empty }}", "3 true 1 true"),
        ("{{ coalesce .Values.missing \"\" \"c\" }} {{ ternary \"y\" \"n\" true }} {{ contains \"b\" \"abc\" }}", "c y true"),
        ("{{ hasPrefix \"ab\" \"abc\" }} {{ hasSuffix \"bc\" \"abc\" }} {{ (split \":\" \"a:b\")._1 }} {{ splitList \",\" \"a,b\" | join \"+\" }}", "true true b a+b"),
        ("{{ b64enc \"hi\" }} {{ sha256sum \"\" | trunc 8 }}", "aGk= e3b0c442"),
        ("{{ semverCompare \">=1.21-0\" \"v1.30.0\" }} {{ semverCompare \"<1.19\" \"1.30.0\" }} {{ semverCompare \"^1.2\" \"1.9.0\" }}", "true false true"),
        ("{{ toString 5 }} {{ int \"42\" }} {{ sub 5 2 }} {{ list 1 \"a\" }}", "5 42 3 [1 a]"),
        ("{{ upper \"a\" | printf \"%s!\" }}", "A!"),
        ("{{ indent 2 \"a\\nb\" }}", "  a\n  b"),
    ],
)
def test_constructs(source: str, expected: str) -> None:
    assert render(source, V) == expected


def test_define_include_template_and_block() -> None:
    helpers = '{{- define "app.name" -}}{{ .Chart.Name }}-{{ .Values.suffix }}{{- end -}}\n{{- define "app.image" -}}{{ printf "%s:%s" .repository .tag }}{{- end -}}'
    data = {"Chart": {"Name": "demo"}, "Values": {"suffix": "x", "image": {"repository": "r/app", "tag": "v1"}}}
    assert render('{{ include "app.name" . }} {{ include "app.image" .Values.image | quote }}', data, helpers=helpers) == 'demo-x "r/app:v1"'
    assert render('{{ template "app.image" .Values.image }}', data, helpers=helpers) == "r/app:v1"
    assert render('{{ block "b" . }}default {{ .Values.suffix }}{{ end }}', data) == "default x"


def test_tpl_renders_values_as_templates() -> None:
    data = {"Values": {"registry": "quay.io", "image": "{{ .Values.registry }}/org/app:v1"}}
    assert render("{{ tpl .Values.image . }}", data) == "quay.io/org/app:v1"


def test_required_and_fail_stop_rendering() -> None:
    with pytest.raises(TemplateError, match="required value missing: set image"):
        render('{{ required "set image" .Values.image }}', {"Values": {}})
    with pytest.raises(TemplateError, match="the chart called fail: nope"):
        render('{{ fail "nope" }}', {})


def test_field_of_nil_is_an_error_as_in_go() -> None:
    with pytest.raises(TemplateError, match=r"t.yaml:1: nil pointer evaluating interface \{\}.tag"):
        render("{{ .Values.image.tag }}", {"Values": {}})
    # …but not a field of a nil out of a pipeline or a variable (Go makes it an invalid value)
    assert render("{{ if ((((.Values).global).postgresql).auth).existingSecret }}x{{ else }}none{{ end }}", {"Values": {}}) == "none"
    assert render("{{ $g := .Values.global }}[{{ $g.a.b }}]", {"Values": {}}) == "[]"


def test_unknown_function_is_refused_naming_the_file_line_and_function() -> None:
    with pytest.raises(TemplateUnsupportedError) as exc:
        render("line one\n{{ getHostByName \"x\" }}", {})
    assert str(exc.value) == "t.yaml:2: function 'getHostByName'"


@pytest.mark.parametrize("source", ["{{ if .x }}no end", "{{ end }}", "{{ .x", "{{ \"unterminated }}", "{{ else }}"])
def test_syntax_errors(source: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        render(source, {"x": 1})


def test_include_recursion_is_bounded() -> None:
    with pytest.raises(TemplateError, match="nested too deeply"):
        render('{{ define "loop" }}{{ include "loop" . }}{{ end }}{{ include "loop" . }}', {})


def test_a_field_after_a_parenthesised_pipeline_is_another_operand_unless_attached() -> None:
    data = {"Values": {"name": "ctl", "m": {"k": "v"}}, "Chart": {"Name": "c"}}
    assert render('{{ printf "%s-%s" (print "a") .Values.name }}', data) == "a-ctl"
    assert render("{{ (.Values.m).k }}", data) == "v"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("{{ with .Values.missing }}a{{ else with .Values.image }}{{ .repository }}{{ else }}c{{ end }}", "quay.io/org/app"),
        ("{{ if true }}{{ $v := 1 }}{{ end }}{{ $v }}", None),  # a variable does not outlive its block
        ("{{ with $img := .Values.image }}{{ $img.tag }}{{ end }}", "1.1"),
        ("{{ printf \"%05d|%-4s|%x|%q\" 42 \"ab\" 255 \"q\" }}", '00042|ab  |ff|"q"'),
        ("{{ regexReplaceAll \"(a+)b\" \"xaab\" \"<${1}>\" }}", "x<aa>"),
        ("{{ dig \"image\" \"repository\" \"none\" .Values }} {{ dig \"image\" \"nope\" \"none\" .Values }}", "quay.io/org/app none"),
        ("{{ lookup \"v1\" \"Secret\" \"ns\" \"name\" | len }}", "0"),
        ("{{ default 5 0 }} {{ default \"x\" false }} {{ default \"x\" (list) }}", "5 x x"),
        ("{{ list 3 1 2 | toJson }} {{ dict \"b\" 1 \"a\" (list) | toJson }}", '[3,1,2] {"a":[],"b":1}'),
        ("{{ $d := dict }}{{ $_ := set $d \"k\" \"v\" }}{{ $d.k }}", "v"),
        ("{{ .Values.list | last }} {{ .Values.list | first }} {{ without .Values.list \"b\" | join \"\" }}", "c a ac"),
        ("{{ \"a-b_c\" | camelcase }} {{ \"AppName\" | kebabcase }} {{ \"x\" | repeat 3 }}", "ABC app-name xxx"),
    ],
)
def test_more_constructs(source: str, expected: Optional[str]) -> None:
    if expected is None:
        with pytest.raises(TemplateError, match="undefined variable"):
            render(source, V)
    else:
        assert render(source, V) == expected


def test_chart_objects_files_and_capabilities() -> None:
    from bundler.openshift.helm.chart import load_chart, render as render_chart

    files = {
        "Chart.yaml": b"apiVersion: v2\nname: objs\nversion: 0.3.0\nappVersion: '1.0'\n",
        "config/app.properties": b"a=1\n",
        "templates/cm.yaml": (b"name: {{ .Chart.Name }}-{{ .Chart.Version }}-{{ .Chart.AppVersion }}\n"
                              b"release: '{{ .Release.Name }}|{{ .Release.Service }}'\n"
                              b"file: {{ .Files.Get \"config/app.properties\" | trim }}\n"
                              b"glob: {{ range $path, $_ := .Files.Glob \"config/*\" }}{{ $path }}{{ end }}\n"
                              b"kube: {{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }}\n"
                              b"hpa: {{ .Capabilities.APIVersions.Has \"autoscaling/v2\" }} {{ .Capabilities.APIVersions.Has \"autoscaling/v2beta1\" }}\n"
                              b"tmpl: {{ .Template.Name }}\n"),
    }
    out = render_chart(load_chart(files, what="objs"))["objs/templates/cm.yaml"]
    assert out.splitlines() == [
        "name: objs-0.3.0-1.0", "release: '|Helm'", "file: a=1", "glob: config/app.properties", "kube: 1.30", "hpa: true false",
        "tmpl: objs/templates/cm.yaml",
    ]
