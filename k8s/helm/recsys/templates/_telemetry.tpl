{{/* Environment of a service's container for its logs and tracing (recsys/rpc/logs.py, recsys/rpc/tracing.py):
RECSYS_LOG_FORMAT and the standard OTEL_* variables. Called with (dict "root" $ "component" "ranker"). */}}
{{- define "recsys.telemetryEnv" -}}
{{- $t := .root.Values.tracing -}}
- name: RECSYS_LOG_FORMAT
  value: {{ .root.Values.logFormat | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s-%s" (include "recsys.fullname" .root) .component | quote }}
- name: OTEL_TRACES_EXPORTER
  value: {{ ternary "otlp" "none" $t.enabled | quote }}
{{- if $t.enabled }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.samplerArg | toString | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.endpoint | quote }}
- name: OTEL_PROPAGATORS
  value: "tracecontext,baggage"
{{- with $t.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}
