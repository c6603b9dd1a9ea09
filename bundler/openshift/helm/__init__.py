"""Helm charts (oc-mirror's `mirror.helm`): repositories, charts, their templates and the images they name.

The Go-template subset Helm charts are written in (`gotemplate` parses, `goeval` evaluates, `gofuncs` are
the functions, `gotext` and `semver` their text and version helpers), chart loading and rendering
(`chart`, `values`), chart repositories (`repo`), image paths (`images`) and the planning step (`plan`).
"""
