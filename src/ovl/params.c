// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Mount options, with overlayfs's names and syntax: a comma-separated
 * list in which a backslash escapes the next character, and lowerdir
 * layers separated by colons, the top layer first.
 */
#include "ovl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

void ovl_error_set(struct ovl_error *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

/*
 * lamina check wants every error, not the first: where setup can go on
 * with the next check, it hands the error over here. Returns 0 when the
 * error was reported that way, else err.
 */
int ovl_error_continue(struct ovl_error *e, int err)
{
	if (!err || !e->more)
		return err;
	if (!e->msg[0])
		ovl_error_set(e, "%s", strerror(-err));
	e->more(e->arg, e->msg);
	e->count++;
	e->msg[0] = '\0';
	return 0;
}

char *ovl_split_unescaped(char *s, char sep)
{
	for (; *s; s++) {
		if (*s == '\\' && s[1]) {
			s++;
			continue;
		}
		if (*s == sep) {
			*s = '\0';
			return s + 1;
		}
	}
	return NULL;
}

void ovl_unescape(char *s)
{
	char *out = s;

	for (; *s; s++) {
		if (*s == '\\' && s[1])
			s++;
		*out++ = *s;
	}
	*out = '\0';
}

static int add_lower(struct ovl_config *cfg, const char *path,
		     struct ovl_error *e)
{
	char **dirs = realloc(cfg->lowerdirs,
			      (cfg->nlower + 1) * sizeof(*dirs));

	if (!dirs)
		return -ENOMEM;
	cfg->lowerdirs = dirs;
	if (!*path) {
		ovl_error_set(e, "lowerdir: empty layer path; separate layers with single colons, as in lowerdir=/top:/bottom");
		return -EINVAL;
	}
	dirs[cfg->nlower] = strdup(path);
	if (!dirs[cfg->nlower])
		return -ENOMEM;
	ovl_unescape(dirs[cfg->nlower]);
	cfg->nlower++;
	return 0;
}

static int parse_lowerdir(struct ovl_config *cfg, char *value,
			  struct ovl_error *e)
{
	bool data = false; /* value is a data-only layer */
	char *next;
	int err;

	if (cfg->nlower) {
		ovl_error_set(e, "lowerdir given twice; list every layer in one lowerdir=, the top one first");
		return -EINVAL;
	}
	for (; value; value = next) {
		next = ovl_split_unescaped(value, ':');
		err = add_lower(cfg, value, e);
		if (err)
			return err;
		if (data)
			cfg->ndata++;
		if (next && *next == ':') {
			data = true; /* "::" puts a data-only layer next */
			next++;
		} else if (next && data) {
			ovl_error_set(e, "lowerdir: a regular layer follows the data-only layer %s; put data-only layers last, each after ::",
				      value);
			return -EINVAL;
		}
	}
	if (cfg->nlower > 500) {
		ovl_error_set(e, "lowerdir: %d layers given; overlayfs allows at most 500",
			      cfg->nlower);
		return -EINVAL;
	}
	return 0;
}

static int set_path(char **dst, const char *key, char *value,
		    struct ovl_error *e)
{
	if (*dst) {
		ovl_error_set(e, "%s given twice; give it once", key);
		return -EINVAL;
	}
	if (!*value) {
		ovl_error_set(e, "%s: empty path; give a directory, as in %s=/path",
			      key, key);
		return -EINVAL;
	}
	ovl_unescape(value);
	*dst = strdup(value);
	return *dst ? 0 : -ENOMEM;
}

/* Generic mount(8) options and the MS_* flag each sets or clears. */
static const struct {
	const char *name;
	unsigned long set;
	unsigned long clear;
} mount_flags[] = {
	{"ro", MS_RDONLY, 0},
	{"rw", 0, MS_RDONLY},
	{"nosuid", MS_NOSUID, 0},
	{"suid", 0, MS_NOSUID},
	{"nodev", MS_NODEV, 0},
	{"dev", 0, MS_NODEV},
	{"noexec", MS_NOEXEC, 0},
	{"exec", 0, MS_NOEXEC},
	{"sync", MS_SYNCHRONOUS, 0},
	{"async", 0, MS_SYNCHRONOUS},
	{"dirsync", MS_DIRSYNC, 0},
	{"noatime", MS_NOATIME, 0},
	{"atime", 0, MS_NOATIME},
	{"nodiratime", MS_NODIRATIME, 0},
	{"diratime", 0, MS_NODIRATIME},
	{"relatime", MS_RELATIME, 0},
	{"norelatime", 0, MS_RELATIME},
	{"strictatime", MS_STRICTATIME, 0},
	{"lazytime", MS_LAZYTIME, 0},
	{"nolazytime", 0, MS_LAZYTIME},
	/* Options for mount(8) and fstab alone, with nothing to set. */
	{"defaults", 0, 0},
	{"auto", 0, 0},
	{"noauto", 0, 0},
	{"nofail", 0, 0},
	{"_netdev", 0, 0},
	{"user", 0, 0},
	{"users", 0, 0},
	{"nouser", 0, 0},
	{"owner", 0, 0},
	{"group", 0, 0},
	{"silent", 0, 0},
	{"loud", 0, 0},
	{"default_permissions", 0, 0}, /* lamina always checks permissions */
};

static bool parse_mount_flag(struct ovl_config *cfg, const char *opt)
{
	size_t i;

	for (i = 0; i < sizeof(mount_flags) / sizeof(mount_flags[0]); i++) {
		if (strcmp(opt, mount_flags[i].name))
			continue;
		cfg->mount_flags |= mount_flags[i].set;
		cfg->mount_flags &= ~mount_flags[i].clear;
		return true;
	}
	return !strncmp(opt, "x-", 2) || !strncmp(opt, "comment=", 8);
}

/*
 * Check an overlayfs feature option against the values lamina
 * implements. A value that overlayfs accepts but lamina lacks gets its
 * own message, so it is not mistaken for a typing error.
 */
static int parse_feature(const char *key, const char *value,
			 const char *const *supported,
			 const char *const *known, struct ovl_error *e)
{
	char values[128] = "";
	int i;

	for (i = 0; supported[i]; i++) {
		if (!strcmp(value, supported[i]))
			return i;
		snprintf(values + strlen(values), sizeof(values) - strlen(values),
			 "%s%s=%s", i ? " or " : "", key, supported[i]);
	}
	for (i = 0; known[i]; i++) {
		if (strcmp(value, known[i]))
			continue;
		ovl_error_set(e, "%s=%s is not supported by this version of lamina; use %s=%s",
			      key, value, key, supported[0]);
		return -EOPNOTSUPP;
	}
	ovl_error_set(e, "invalid value '%s' for %s; use %s", value, key,
		      values);
	return -EINVAL;
}

static int parse_bool(const char *key, const char *value, bool *out,
		      struct ovl_error *e)
{
	if (!strcmp(value, "on")) {
		*out = true;
		return 0;
	}
	if (!strcmp(value, "off")) {
		*out = false;
		return 0;
	}
	ovl_error_set(e, "invalid value '%s' for %s; use on or off", value,
		      key);
	return -EINVAL;
}

static int parse_features(struct ovl_config *cfg, const char *key,
			  const char *value, struct ovl_error *e)
{
	static const char *const off[] = {"off", NULL};
	static const char *const on[] = {"on", NULL};
	static const char *const redirect_ok[] = {"on", "follow", "off",
						  "nofollow", NULL};
	static const char *const none[] = {NULL};
	static const char *const xino_ok[] = {"auto", "on", "off", NULL};
	static const char *const uuid_ok[] = {"auto", "null", "off", NULL};
	static const char *const verity_known[] = {"on", "require", NULL};
	int v;

	if (!strcmp(key, "redirect_dir")) {
		v = parse_feature(key, value, redirect_ok, none, e);
		if (v >= 0)
			cfg->redirect = (enum ovl_redirect_mode)v;
		cfg->redirect_set = v >= 0;
	} else if (!strcmp(key, "metacopy")) {
		v = parse_bool(key, value, &cfg->metacopy, e);
	} else if (!strcmp(key, "index")) {
		v = parse_bool(key, value, &cfg->index, e);
		cfg->index_set = v >= 0;
	} else if (!strcmp(key, "nfs_export")) {
		v = parse_feature(key, value, off, on, e);
	} else if (!strcmp(key, "xino")) {
		v = parse_feature(key, value, xino_ok, none, e);
		if (v >= 0)
			cfg->xino_off = !strcmp(value, "off");
	} else if (!strcmp(key, "uuid")) {
		v = parse_feature(key, value, uuid_ok, on, e);
	} else if (!strcmp(key, "verity")) {
		v = parse_feature(key, value, off, verity_known, e);
	} else if (!strcmp(key, "passthrough")) {
		v = parse_bool(key, value, &cfg->passthrough, e);
	} else if (!strcmp(key, "io_uring")) {
		v = parse_bool(key, value, &cfg->io_uring, e);
	} else if (!strcmp(key, "prefetch")) {
		v = parse_bool(key, value, &cfg->prefetch, e);
	} else {
		ovl_error_set(e, "unknown option '%s=%s'; run lamina --help",
			      key, value);
		return -EINVAL;
	}
	return v < 0 ? v : 0;
}

static int parse_one(struct ovl_config *cfg, char *opt, struct ovl_error *e)
{
	char *value = ovl_split_unescaped(opt, '=');

	if (!value) {
		if (!strcmp(opt, "userxattr"))
			cfg->userxattr = true;
		else if (!strcmp(opt, "volatile"))
			cfg->volatile_mount = true;
		else if (!strcmp(opt, "allow_other"))
			cfg->allow_other = true;
		else if (!parse_mount_flag(cfg, opt)) {
			ovl_error_set(
			    e, "unknown option '%s'; run lamina --help", opt);
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(opt, "lowerdir"))
		return parse_lowerdir(cfg, value, e);
	if (!strcmp(opt, "upperdir"))
		return set_path(&cfg->upperdir, opt, value, e);
	if (!strcmp(opt, "workdir"))
		return set_path(&cfg->workdir, opt, value, e);
	if (!strcmp(opt, "fsname")) {
		if (!*value) {
			ovl_error_set(e, "fsname: empty name; give a name, as in fsname=mylayers, or drop the option");
			return -EINVAL;
		}
		ovl_unescape(value);
		free(cfg->fsname);
		cfg->fsname = strdup(value);
		return cfg->fsname ? 0 : -ENOMEM;
	}
	if (!strcmp(opt, "subtype") || !strcmp(opt, "comment") ||
	    !strncmp(opt, "x-", 2))
		return 0;
	return parse_features(cfg, opt, value, e);
}

/* Parse one -o argument; may be called once per -o. */
int ovl_parse_options(struct ovl_config *cfg, const char *opts,
		      struct ovl_error *e)
{
	char *copy = strdup(opts), *opt, *next;
	int err = 0;

	if (!copy)
		return -ENOMEM;
	for (opt = copy; opt && !err; opt = next) {
		next = ovl_split_unescaped(opt, ',');
		if (*opt)
			err = parse_one(cfg, opt, e);
	}
	free(copy);
	return err;
}

static const char *redirect_name(enum ovl_redirect_mode mode)
{
	static const char *const names[] = {"on", "follow", "off",
					    "nofollow"};

	return names[mode];
}

/* Checks between options, after all of them are parsed. */
int ovl_config_finish(struct ovl_config *cfg, struct ovl_error *e)
{
	if (!cfg->nlower) {
		ovl_error_set(e, "no lowerdir given; add -o lowerdir=/path");
		return -EINVAL;
	}
	if (cfg->upperdir && !cfg->workdir) {
		ovl_error_set(e, "upperdir %s given without workdir; add -o workdir=DIR, an empty directory on the same filesystem",
			      cfg->upperdir);
		return -EINVAL;
	}
	if (cfg->workdir && !cfg->upperdir) {
		ovl_error_set(e, "workdir %s given without upperdir; add -o upperdir=DIR or drop workdir",
			      cfg->workdir);
		return -EINVAL;
	}
	if (cfg->userxattr && cfg->redirect_set &&
	    cfg->redirect != OVL_REDIRECT_NOFOLLOW) {
		ovl_error_set(e, "userxattr conflicts with redirect_dir=%s: overlayfs follows no redirect stored in user xattrs, which any file owner can set; drop redirect_dir or use redirect_dir=nofollow",
			      redirect_name(cfg->redirect));
		return -EINVAL;
	}
	if (cfg->userxattr && cfg->metacopy) {
		ovl_error_set(e, "userxattr conflicts with metacopy=on: overlayfs follows no metacopy redirect stored in user xattrs; drop metacopy=on");
		return -EINVAL;
	}
	/* As overlayfs: with userxattr, redirects are neither made nor
	 * followed unless asked for. */
	if (cfg->userxattr)
		cfg->redirect = OVL_REDIRECT_NOFOLLOW;
	if (cfg->metacopy && (cfg->redirect == OVL_REDIRECT_OFF ||
			      cfg->redirect == OVL_REDIRECT_NOFOLLOW ||
			      (cfg->redirect == OVL_REDIRECT_FOLLOW &&
			       cfg->upperdir))) {
		ovl_error_set(e, "metacopy=on conflicts with redirect_dir=%s: a file copied up without its data finds the data through a redirect; use redirect_dir=on",
			      redirect_name(cfg->redirect));
		return -EINVAL;
	}
	/* Without an upper layer the mount is read-only, as in overlayfs. */
	if (!cfg->upperdir)
		cfg->mount_flags |= MS_RDONLY;
	cfg->read_only = cfg->mount_flags & MS_RDONLY;
	return 0;
}

void ovl_config_free(struct ovl_config *cfg)
{
	int i;

	for (i = 0; i < cfg->nlower; i++)
		free(cfg->lowerdirs[i]);
	free(cfg->lowerdirs);
	free(cfg->upperdir);
	free(cfg->workdir);
	free(cfg->mountpoint);
	free(cfg->fsname);
	memset(cfg, 0, sizeof(*cfg));
}
