{{- /* vuln-scan's report: one line per finding, "ID SEVERITY PACKAGE VERSION FIXED-VERSION" (- when there is no fix). */ -}}
{{- range . }}{{- range .Vulnerabilities }}
{{ .VulnerabilityID }} {{ .Severity }} {{ .PkgName }} {{ .InstalledVersion }} {{ if .FixedVersion }}{{ .FixedVersion }}{{ else }}-{{ end }}
{{- end }}{{- end }}
