/* The Prometheus text exposition format 0.0.4 of the daemon's metrics.
 *
 * Input: the list metrics_current() builds, [{name, help, type, value,
 * labels}], names without the "sessiond_" prefix. Output: one HELP and one
 * TYPE line per metric name, in the order names first appear, then every
 * sample of that name; names are prefixed "sessiond_". This is the same
 * text `sessionctl metrics --prometheus` prints from Admin.Metrics, so the
 * scrape endpoint (metrics_http.c) and node_exporter's textfile collector
 * see the same series.
 */
#pragma once

#include <jansson.h>
#include <stdio.h>

/* Writes the text of metrics to f. -EINVAL when metrics is not an array,
 * -EIO when f failed. */
int prometheus_write(json_t *metrics, FILE *f);

/* The same into a new string (*ret, NUL-terminated, *ret_len bytes). */
int prometheus_render(json_t *metrics, char **ret, size_t *ret_len);
