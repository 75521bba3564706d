// Package crdgen only pins the API types that controller-gen reads (see go.mod).
package crdgen

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
