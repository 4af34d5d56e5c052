// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The layers and features of a stack: from overlay options given on the
 * command line, from a kernel overlay mount's super options, or from the
 * daemon of a lamina mount.
 */
#include "cli.h"
#include "stack.h"
#include "ovl/ovl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cli_stack_free(struct cli_stack *s)
{
	int i;

	for (i = 0; i < s->nlower; i++)
		free(s->lowers[i]);
	free(s->lowers);
	free(s->mountpoint);
	free(s->fstype);
	free(s->upper);
	free(s->work);
	free(s->options);
	memset(s, 0, sizeof(*s));
}

static int stack_add_lower(struct cli_stack *s, const char *path)
{
	char **grown = realloc(s->lowers, (s->nlower + 1) * sizeof(*grown));

	if (!grown)
		return -ENOMEM;
	s->lowers = grown;
	grown[s->nlower] = strdup(path);
	if (!grown[s->nlower])
		return -ENOMEM;
	s->nlower++;
	return 0;
}

static const char *redirect_name(enum ovl_redirect_mode mode)
{
	switch (mode) {
	case OVL_REDIRECT_ON:
		return "on";
	case OVL_REDIRECT_FOLLOW:
		return "follow";
	case OVL_REDIRECT_OFF:
		return "off";
	case OVL_REDIRECT_NOFOLLOW:
		return "nofollow";
	}
	return "on";
}

static int stack_from_config(const struct ovl_config *cfg, struct cli_stack *s)
{
	int i, err = 0;

	for (i = 0; !err && i < cfg->nlower; i++)
		err = stack_add_lower(s, cfg->lowerdirs[i]);
	if (!err && cfg->upperdir && !(s->upper = strdup(cfg->upperdir)))
		err = -ENOMEM;
	if (!err && cfg->workdir && !(s->work = strdup(cfg->workdir)))
		err = -ENOMEM;
	snprintf(s->redirect_dir, sizeof(s->redirect_dir), "%s",
		 redirect_name(cfg->redirect));
	snprintf(s->xino, sizeof(s->xino), "%s",
		 cfg->xino_off ? "off" : "auto");
	s->userxattr = cfg->userxattr;
	s->volatile_mount = cfg->volatile_mount;
	s->read_only = cfg->read_only;
	s->passthrough = cfg->passthrough;
	s->prefetch = cfg->prefetch;
	s->index = cfg->index;
	s->metacopy = cfg->metacopy;
	return err;
}

/*
 * Fill s from overlay mount options in lamina's syntax (backslash
 * escapes). On an error, err contains the message without the prefix.
 */
int cli_stack_from_options(const char *options, struct cli_stack *s, char *err,
			   size_t size)
{
	struct ovl_config cfg = {0};
	struct ovl_error e = {{0}};
	int rc;

	cfg.passthrough = true;
	cfg.io_uring = true;
	cfg.prefetch = true;
	rc = ovl_parse_options(&cfg, options, &e);
	if (!rc)
		rc = ovl_config_finish(&cfg, &e);
	if (rc) {
		snprintf(err, size, "%s", e.msg[0] ? e.msg : strerror(-rc));
		ovl_config_free(&cfg);
		return rc;
	}
	rc = stack_from_config(&cfg, s);
	ovl_config_free(&cfg);
	if (rc)
		snprintf(err, size, "%s", strerror(-rc));
	return rc;
}

/* Read a yes/no parameter of the overlay module; false when absent. */
static bool overlay_param(const char *name)
{
	char path[128], c = 'N';
	FILE *f;

	snprintf(path, sizeof(path), "/sys/module/overlay/parameters/%s", name);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (fread(&c, 1, 1, f) != 1)
		c = 'N';
	fclose(f);
	return c == 'Y';
}

/* The kernel shows redirect_dir= and xino= only when they differ from
 * the module's defaults, so the defaults come first. */
static void kernel_defaults(struct cli_stack *s)
{
	const char *redirect = "nofollow";

	if (overlay_param("redirect_dir"))
		redirect = "on";
	else if (overlay_param("redirect_always_follow"))
		redirect = "follow";
	snprintf(s->redirect_dir, sizeof(s->redirect_dir), "%s", redirect);
	snprintf(s->xino, sizeof(s->xino), "%s",
		 overlay_param("xino_auto") ? "auto" : "off");
	s->index = overlay_param("index");
	s->metacopy = overlay_param("metacopy");
}

/* Add each layer of lowerdir's value, which colons separate. */
static int kernel_lowers(struct cli_stack *s, char *value)
{
	char *next;
	int err = 0;

	for (; value && !err; value = next) {
		next = ovl_split_unescaped(value, ':');
		ovl_unescape(value);
		/* The empty layer between the colons of "::" starts the
		 * data-only layers. */
		if (*value)
			err = stack_add_lower(s, value);
	}
	return err;
}

/*
 * Store a path option of a kernel overlay mount. The kernel shows each
 * path as it was given, so after the octal escapes of mountinfo a
 * backslash still escapes a comma, a colon or a backslash in it, as in
 * lamina's own options. Returns 1 when key is not a path option.
 */
static int kernel_path_option(struct cli_stack *s, const char *key, char *value)
{
	char **dst;

	if (!strcmp(key, "lowerdir"))
		return kernel_lowers(s, value);
	/* lowerdir+ and datadir+ (Linux 6.8 and later) name one layer
	 * each. The kernel takes them without escapes and shows them in
	 * place of lowerdir=. */
	if (!strcmp(key, "lowerdir+") || !strcmp(key, "datadir+"))
		return stack_add_lower(s, value);
	if (!strcmp(key, "upperdir"))
		dst = &s->upper;
	else if (!strcmp(key, "workdir"))
		dst = &s->work;
	else
		return 1;
	ovl_unescape(value);
	free(*dst);
	*dst = strdup(value);
	return *dst ? 0 : -ENOMEM;
}

static int kernel_option(struct cli_stack *s, char *key)
{
	char *value = strchr(key, '=');
	int err;

	if (value)
		*value++ = '\0';
	if (value)
		cli_unescape_octal(value);
	if (!strcmp(key, "ro"))
		s->read_only = true;
	else if (!strcmp(key, "userxattr"))
		s->userxattr = true;
	else if (!strcmp(key, "volatile"))
		s->volatile_mount = true;
	if (!value)
		return 0;
	err = kernel_path_option(s, key, value);
	if (err <= 0)
		return err;
	if (!strcmp(key, "redirect_dir"))
		snprintf(s->redirect_dir, sizeof(s->redirect_dir), "%s", value);
	else if (!strcmp(key, "xino"))
		snprintf(s->xino, sizeof(s->xino), "%s", value);
	else if (!strcmp(key, "index"))
		s->index = !strcmp(value, "on");
	else if (!strcmp(key, "metacopy"))
		s->metacopy = !strcmp(value, "on");
	return 0;
}

static int stack_from_kernel(const struct cli_mount *m, struct cli_stack *s)
{
	char *copy = strdup(m->super_options), *item, *save = NULL;
	int err = 0;

	if (!copy)
		return -ENOMEM;
	kernel_defaults(s);
	/* Commas inside paths are octal-escaped, so each comma separates. */
	for (item = strtok_r(copy, ",", &save); item && !err;
	     item = strtok_r(NULL, ",", &save))
		err = kernel_option(s, item);
	free(copy);
	if (!strncmp(m->mount_options, "ro", 2) &&
	    (m->mount_options[2] == ',' || !m->mount_options[2]))
		s->read_only = true;
	return err;
}

/*
 * Whether this process may query the daemon of the FUSE mount m. The
 * daemon replies only to root and to the user in the mount's user_id=
 * option, which goes to *owner (-1 if the option is missing).
 */
static bool may_query(const struct cli_mount *m, long *owner)
{
	const char *opt = strstr(m->super_options, "user_id=");

	*owner = opt ? strtol(opt + strlen("user_id="), NULL, 10) : -1;
	return geteuid() == 0 || *owner < 0 || (uid_t)*owner == geteuid();
}

/* Fill s from a mount. On an error, err contains the message. */
int cli_stack_from_mount(const struct cli_mount *m, struct cli_stack *s,
			 char *err, size_t size)
{
	long owner;
	int rc;

	memset(s, 0, sizeof(*s));
	if (!strcmp(m->fstype, "overlay")) {
		rc = stack_from_kernel(m, s);
		if (rc)
			snprintf(err, size, "%s: %s", m->mountpoint,
				 strerror(-rc));
	} else {
		rc = daemon_link_query(m->mountpoint, s);
		if (rc && !may_query(m, &owner))
			snprintf(
			    err, size,
			    "the daemon of %s answers only root and the user who mounted it (uid %ld); run this command as one of them",
			    m->mountpoint, owner);
		else if (rc)
			snprintf(
			    err, size,
			    "the daemon of %s did not send its configuration: %s; check that it is running",
			    m->mountpoint, strerror(-rc));
	}
	if (!rc) {
		s->mountpoint = strdup(m->mountpoint);
		s->fstype = strdup(m->fstype);
		if (!s->mountpoint || !s->fstype)
			rc = -ENOMEM;
	}
	if (rc)
		cli_stack_free(s);
	return rc;
}
