// SPDX-License-Identifier: GPL-2.0-or-later
/* Entry names of OCI layer tars: whiteouts, opaque markers, safe paths. */
#include "oci.h"

#include <archive.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void oci_error_set(struct oci_error *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

const char *oci_archive_error(struct archive *a, char *buf, size_t size)
{
	const char *msg = archive_error_string(a);
	int err = archive_errno(a);

	/* libarchive gives errors that no system call returned -1, 0 or, for
	 * an invalid format on Linux, EILSEQ, whose text would mislead. */
	if (err <= 0 || err == EILSEQ)
		snprintf(buf, size, "%s",
			 msg ? msg : "unknown libarchive error");
	else if (!msg || strstr(msg, strerror(err)))
		snprintf(buf, size, "%s", msg ? msg : strerror(err));
	else
		snprintf(buf, size, "%s: %s", msg, strerror(err));
	return buf;
}

static bool starts_with(const char *s, const char *prefix)
{
	return !strncmp(s, prefix, strlen(prefix));
}

/* Check one component of an entry path; last is true for the final one. */
static int check_component(const char *path, const char *comp, size_t len,
			   bool last, struct oci_error *e)
{
	const char *target = comp + strlen(OCI_WHITEOUT_PREFIX);
	size_t target_len = len - strlen(OCI_WHITEOUT_PREFIX);

	if (len == 2 && !strncmp(comp, "..", 2)) {
		oci_error_set(
		    e,
		    "tar entry '%s' contains '..'; the archive is unsafe, so nothing was imported",
		    path);
		return -EINVAL;
	}
	if (len < strlen(OCI_WHITEOUT_PREFIX) ||
	    !starts_with(comp, OCI_WHITEOUT_PREFIX))
		return 0;
	if (!last) {
		oci_error_set(
		    e,
		    "tar entry '%s' has a whiteout name (.wh.) before a slash; a whiteout must be the last component, so the archive is invalid",
		    path);
		return -EINVAL;
	}
	if (len == strlen(OCI_OPAQUE_NAME) &&
	    !strncmp(comp, OCI_OPAQUE_NAME, len))
		return 0;
	if (target_len == 0 || (target_len == 1 && target[0] == '.') ||
	    (target_len == 2 && !strncmp(target, "..", 2)) ||
	    starts_with(target, OCI_WHITEOUT_PREFIX)) {
		oci_error_set(
		    e,
		    "tar entry '%s' is not a valid whiteout; only .wh.NAME and .wh..wh..opq are defined for OCI layers",
		    path);
		return -EINVAL;
	}
	return 0;
}

int oci_clean_path(const char *path, char *out, size_t size,
		   struct oci_error *e)
{
	const char *p = path, *end;
	size_t used = 0, len;
	int err;

	if (path[0] == '/') {
		oci_error_set(
		    e,
		    "tar entry '%s' has an absolute path; the archive is unsafe, so nothing was imported",
		    path);
		return -EINVAL;
	}
	out[0] = '\0';
	while (*p) {
		end = strchrnul(p, '/');
		len = (size_t)(end - p);
		/* Trailing slashes and "." components name the same entry. */
		if (len && !(len == 1 && p[0] == '.')) {
			err = check_component(path, p, len,
					      !end[strspn(end, "/")], e);
			if (err)
				return err;
			if (used + !!used + len + 1 > size) {
				oci_error_set(
				    e,
				    "tar entry '%s' has a path longer than %zu bytes",
				    path, size - 1);
				return -ENAMETOOLONG;
			}
			if (used)
				out[used++] = '/';
			memcpy(out + used, p, len);
			used += len;
			out[used] = '\0';
		}
		p = *end ? end + 1 : end;
	}
	return 0;
}

enum oci_name_kind oci_name_kind(const char *clean_path)
{
	const char *slash = strrchr(clean_path, '/');
	const char *name = slash ? slash + 1 : clean_path;

	if (!strcmp(name, OCI_OPAQUE_NAME))
		return OCI_NAME_OPAQUE;
	if (starts_with(name, OCI_WHITEOUT_PREFIX))
		return OCI_NAME_WHITEOUT;
	return OCI_NAME_PLAIN;
}

bool oci_xattr_is_overlay(const char *name)
{
	return starts_with(name, "trusted.overlay.") ||
	       starts_with(name, "user.overlay.");
}
