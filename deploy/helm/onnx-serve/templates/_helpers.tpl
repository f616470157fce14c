{{/* Names and labels shared by every template. */}}
{{- define "onnx-serve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "onnx-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "onnx-serve.labels" -}}
{{ include "onnx-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "onnx-serve.image" -}}
{{- $tag := .Values.image.tag | default (ternary (printf "%s-gpu" .Chart.AppVersion) .Chart.AppVersion .Values.gpu.enabled) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- define "onnx-serve.claimName" -}}
{{- .Values.repository.persistentVolumeClaim.existingClaim | default (printf "%s-models" (include "onnx-serve.fullname" .)) -}}
{{- end -}}

{{- define "onnx-serve.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "onnx-serve.fullname" .) -}}
{{- end -}}
