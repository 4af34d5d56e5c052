// SPDX-License-Identifier: GPL-2.0-or-later
/* Mount option parsing: ovl_parse_options() and ovl_config_finish(). */
#include "ovl/ovl.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

struct parse_case {
	struct ovl_config cfg;
	struct ovl_error err;
	int rc;
};

/* Parse opts into a zeroed config. The caller frees pc->cfg. */
static void parse(struct parse_case *pc, const char *opts)
{
	memset(pc, 0, sizeof(*pc));
	pc->rc = ovl_parse_options(&pc->cfg, opts, &pc->err);
}

static void test_lowerdir_order(void)
{
	struct parse_case pc;

	parse(&pc, "lowerdir=/top:/middle:/bottom");
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 3)) {
		CHECK_EQ_STR(pc.cfg.lowerdirs[0], "/top");
		CHECK_EQ_STR(pc.cfg.lowerdirs[1], "/middle");
		CHECK_EQ_STR(pc.cfg.lowerdirs[2], "/bottom");
	}
	ovl_config_free(&pc.cfg);

	parse(&pc, "lowerdir=/only");
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 1))
		CHECK_EQ_STR(pc.cfg.lowerdirs[0], "/only");
	ovl_config_free(&pc.cfg);

	/* Only the first '=' separates the key from the value. */
	parse(&pc, "lowerdir=/a=b:/c");
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 2)) {
		CHECK_EQ_STR(pc.cfg.lowerdirs[0], "/a=b");
		CHECK_EQ_STR(pc.cfg.lowerdirs[1], "/c");
	}
	ovl_config_free(&pc.cfg);
}

static void test_lowerdir_escapes(void)
{
	struct parse_case pc;

	parse(&pc, "lowerdir=/a\\:b:/c");
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 2)) {
		CHECK_EQ_STR(pc.cfg.lowerdirs[0], "/a:b");
		CHECK_EQ_STR(pc.cfg.lowerdirs[1], "/c");
	}
	ovl_config_free(&pc.cfg);

	/* An escaped comma must not end the option. */
	parse(&pc, "lowerdir=/a\\,b:/c,ro");
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 2)) {
		CHECK_EQ_STR(pc.cfg.lowerdirs[0], "/a,b");
		CHECK_EQ_STR(pc.cfg.lowerdirs[1], "/c");
	}
	CHECK_EQ_INT(pc.cfg.mount_flags, MS_RDONLY);
	ovl_config_free(&pc.cfg);

	/* An escaped backslash before a colon leaves the colon a separator. */
	parse(&pc, "lowerdir=/a\\\\:/b");
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 2)) {
		CHECK_EQ_STR(pc.cfg.lowerdirs[0], "/a\\");
		CHECK_EQ_STR(pc.cfg.lowerdirs[1], "/b");
	}
	ovl_config_free(&pc.cfg);

	/* Two escaped colons in a row are part of one name, not "::". */
	parse(&pc, "lowerdir=/x\\:\\:y:/z");
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 2)) {
		CHECK_EQ_STR(pc.cfg.lowerdirs[0], "/x::y");
		CHECK_EQ_STR(pc.cfg.lowerdirs[1], "/z");
	}
	ovl_config_free(&pc.cfg);

	/* A backslash at the very end escapes nothing and is kept. */
	parse(&pc, "lowerdir=/end\\");
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 1))
		CHECK_EQ_STR(pc.cfg.lowerdirs[0], "/end\\");
	ovl_config_free(&pc.cfg);
}

static void test_lowerdir_invalid(void)
{
	static const struct {
		const char *opts;
		const char *msg_part;
	} cases[] = {
	    {"lowerdir=", "empty layer"},
	    {"lowerdir=:/a", "empty layer"},
	    {"lowerdir=/a:", "empty layer"},
	    {"lowerdir=/a:/b:", "empty layer"},
	    {"lowerdir=/a::/b:/c", "::"},
	    {"lowerdir=/a::/b::/c:/d", "::"},
	    {"lowerdir=::/a", "empty layer"},
	    {"lowerdir=/a::", "empty layer"},
	    {"lowerdir=/a,lowerdir=/b", "given twice"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parse_case pc;

		parse(&pc, cases[i].opts);
		if (!CHECK_EQ_INT(pc.rc, -EINVAL))
			fprintf(stderr, "    options: %s\n", cases[i].opts);
		CHECK_CONTAINS(pc.err.msg, "lowerdir");
		CHECK_CONTAINS(pc.err.msg, cases[i].msg_part);
		ovl_config_free(&pc.cfg);
	}
}

/* Layers after "::" are data-only; they come last. */
static void test_lowerdir_data_only(void)
{
	struct parse_case pc;

	parse(&pc, "lowerdir=/a:/b::/c::/d");
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 4)) {
		CHECK_EQ_STR(pc.cfg.lowerdirs[1], "/b");
		CHECK_EQ_STR(pc.cfg.lowerdirs[2], "/c");
		CHECK_EQ_STR(pc.cfg.lowerdirs[3], "/d");
	}
	CHECK_EQ_INT(pc.cfg.ndata, 2);
	ovl_config_free(&pc.cfg);

	parse(&pc, "lowerdir=/a:/b");
	CHECK_EQ_INT(pc.cfg.ndata, 0);
	ovl_config_free(&pc.cfg);
}

/* metacopy=on finds data through redirects, so it needs them. */
static void test_metacopy_needs_redirects(void)
{
	static const char *const bad[] = {"redirect_dir=off",
					  "redirect_dir=nofollow"};
	struct parse_case pc;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		parse(&pc, "lowerdir=/a,metacopy=on");
		CHECK_EQ_INT(ovl_parse_options(&pc.cfg, bad[i], &pc.err), 0);
		CHECK_EQ_INT(ovl_config_finish(&pc.cfg, &pc.err), -EINVAL);
		CHECK_CONTAINS(pc.err.msg, "metacopy=on");
		CHECK_CONTAINS(pc.err.msg, bad[i]);
		ovl_config_free(&pc.cfg);
	}
	parse(&pc, "lowerdir=/a,metacopy=on");
	CHECK_EQ_INT(ovl_config_finish(&pc.cfg, &pc.err), 0);
	CHECK(pc.cfg.metacopy);
	ovl_config_free(&pc.cfg);
}

/* Build "lowerdir=/l0:/l1:...", n layers. */
static char *lowerdir_option(int n)
{
	size_t size = 16 + (size_t)n * 8;
	char *opts = malloc(size);
	size_t len;
	int i;

	if (!opts)
		abort();
	len = (size_t)snprintf(opts, size, "lowerdir=");
	for (i = 0; i < n; i++)
		len += (size_t)snprintf(opts + len, size - len, "%s/l%d",
					i ? ":" : "", i);
	return opts;
}

static void test_lowerdir_layer_limit(void)
{
	struct parse_case pc;
	char *opts;

	opts = lowerdir_option(500);
	parse(&pc, opts);
	CHECK_EQ_INT(pc.rc, 0);
	if (CHECK_EQ_INT(pc.cfg.nlower, 500)) {
		CHECK_EQ_STR(pc.cfg.lowerdirs[0], "/l0");
		CHECK_EQ_STR(pc.cfg.lowerdirs[499], "/l499");
	}
	ovl_config_free(&pc.cfg);
	free(opts);

	opts = lowerdir_option(501);
	parse(&pc, opts);
	CHECK_EQ_INT(pc.rc, -EINVAL);
	CHECK_CONTAINS(pc.err.msg, "501");
	CHECK_CONTAINS(pc.err.msg, "500");
	ovl_config_free(&pc.cfg);
	free(opts);
}

static void test_upper_and_work(void)
{
	struct parse_case pc;

	parse(&pc, "lowerdir=/l,upperdir=/u,workdir=/w");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK_EQ_STR(pc.cfg.upperdir, "/u");
	CHECK_EQ_STR(pc.cfg.workdir, "/w");
	ovl_config_free(&pc.cfg);

	parse(&pc, "upperdir=/u\\,x\\:y,workdir=/w\\\\");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK_EQ_STR(pc.cfg.upperdir, "/u,x:y");
	CHECK_EQ_STR(pc.cfg.workdir, "/w\\");
	ovl_config_free(&pc.cfg);
}

static void test_upper_and_work_invalid(void)
{
	static const struct {
		const char *opts;
		const char *msg_part[2];
	} cases[] = {
	    {"upperdir=/u,upperdir=/v", {"upperdir", "given twice"}},
	    {"workdir=/w,workdir=/x", {"workdir", "given twice"}},
	    {"upperdir=", {"upperdir", "empty path"}},
	    {"workdir=", {"workdir", "empty path"}},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parse_case pc;

		parse(&pc, cases[i].opts);
		if (!CHECK_EQ_INT(pc.rc, -EINVAL))
			fprintf(stderr, "    options: %s\n", cases[i].opts);
		CHECK_CONTAINS(pc.err.msg, cases[i].msg_part[0]);
		CHECK_CONTAINS(pc.err.msg, cases[i].msg_part[1]);
		ovl_config_free(&pc.cfg);
	}
}

/* Options may come in several -o arguments, one call each. */
static void test_options_in_several_calls(void)
{
	struct parse_case pc;
	int rc;

	parse(&pc, "lowerdir=/l");
	CHECK_EQ_INT(pc.rc, 0);
	rc = ovl_parse_options(&pc.cfg, "upperdir=/u", &pc.err);
	CHECK_EQ_INT(rc, 0);
	rc = ovl_parse_options(&pc.cfg, "workdir=/w,ro", &pc.err);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(pc.cfg.nlower, 1);
	CHECK_EQ_STR(pc.cfg.upperdir, "/u");
	CHECK_EQ_STR(pc.cfg.workdir, "/w");
	CHECK_EQ_INT(pc.cfg.mount_flags, MS_RDONLY);

	rc = ovl_parse_options(&pc.cfg, "upperdir=/v", &pc.err);
	CHECK_EQ_INT(rc, -EINVAL);
	CHECK_CONTAINS(pc.err.msg, "upperdir");
	CHECK_EQ_STR(pc.cfg.upperdir, "/u");

	rc = ovl_parse_options(&pc.cfg, "lowerdir=/m", &pc.err);
	CHECK_EQ_INT(rc, -EINVAL);
	CHECK_CONTAINS(pc.err.msg, "lowerdir");
	ovl_config_free(&pc.cfg);
}

static void test_empty_options(void)
{
	static const char *const cases[] = {"", ",", ",,,", "ro,", ",ro"};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parse_case pc;

		parse(&pc, cases[i]);
		if (!CHECK_EQ_INT(pc.rc, 0))
			fprintf(stderr, "    options: \"%s\"\n", cases[i]);
		CHECK_EQ_INT(pc.cfg.nlower, 0);
		ovl_config_free(&pc.cfg);
	}
}

#define ALL_FLAGS                                                              \
	(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_SYNCHRONOUS |       \
	 MS_DIRSYNC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME |               \
	 MS_STRICTATIME | MS_LAZYTIME)

static void test_mount_flags(void)
{
	static const struct {
		const char *name;
		unsigned long set;
		unsigned long clear;
	} cases[] = {
	    {"ro", MS_RDONLY, 0},	    {"rw", 0, MS_RDONLY},
	    {"nosuid", MS_NOSUID, 0},	    {"suid", 0, MS_NOSUID},
	    {"nodev", MS_NODEV, 0},	    {"dev", 0, MS_NODEV},
	    {"noexec", MS_NOEXEC, 0},	    {"exec", 0, MS_NOEXEC},
	    {"sync", MS_SYNCHRONOUS, 0},    {"async", 0, MS_SYNCHRONOUS},
	    {"dirsync", MS_DIRSYNC, 0},	    {"noatime", MS_NOATIME, 0},
	    {"atime", 0, MS_NOATIME},	    {"nodiratime", MS_NODIRATIME, 0},
	    {"diratime", 0, MS_NODIRATIME}, {"relatime", MS_RELATIME, 0},
	    {"norelatime", 0, MS_RELATIME}, {"strictatime", MS_STRICTATIME, 0},
	    {"lazytime", MS_LAZYTIME, 0},   {"nolazytime", 0, MS_LAZYTIME},
	};
	static const unsigned long start[] = {0, ALL_FLAGS};
	size_t i, j;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (j = 0; j < sizeof(start) / sizeof(start[0]); j++) {
			struct ovl_config cfg;
			struct ovl_error err = {{0}};
			unsigned long expected =
			    (start[j] | cases[i].set) & ~cases[i].clear;
			int rc;

			memset(&cfg, 0, sizeof(cfg));
			cfg.mount_flags = start[j];
			rc = ovl_parse_options(&cfg, cases[i].name, &err);
			if (!CHECK_EQ_INT(rc, 0) ||
			    !CHECK_EQ_INT(cfg.mount_flags, expected))
				fprintf(stderr,
					"    option: %s, flags before: %#lx\n",
					cases[i].name, start[j]);
			ovl_config_free(&cfg);
		}
	}
}

/* The last of two opposite flags wins. */
static void test_mount_flags_order(void)
{
	struct parse_case pc;

	parse(&pc, "ro,rw");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK_EQ_INT(pc.cfg.mount_flags, 0);
	ovl_config_free(&pc.cfg);

	parse(&pc, "rw,ro");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK_EQ_INT(pc.cfg.mount_flags, MS_RDONLY);
	ovl_config_free(&pc.cfg);

	parse(&pc, "nosuid,nodev,noexec,suid");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK_EQ_INT(pc.cfg.mount_flags, MS_NODEV | MS_NOEXEC);
	ovl_config_free(&pc.cfg);
}

/* Options for mount(8) and fstab alone: accepted, and no flag changes. */
static void test_ignored_options(void)
{
	static const char *const cases[] = {
	    "defaults",
	    "auto",
	    "noauto",
	    "nofail",
	    "_netdev",
	    "user",
	    "users",
	    "nouser",
	    "owner",
	    "group",
	    "silent",
	    "loud",
	    "default_permissions",
	    "x-foo",
	    "x-systemd.automount",
	    "x-foo=bar",
	    "x-systemd.requires=/dev/vda",
	    "comment=foo",
	    "comment=x=y",
	    "comment=",
	    "subtype=lamina",
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parse_case pc;

		parse(&pc, cases[i]);
		if (!CHECK_EQ_INT(pc.rc, 0) ||
		    !CHECK_EQ_INT(pc.cfg.mount_flags, 0))
			fprintf(stderr, "    option: %s\n", cases[i]);
		CHECK_EQ_INT(pc.cfg.nlower, 0);
		CHECK(!pc.cfg.userxattr);
		CHECK(!pc.cfg.allow_other);
		CHECK_EQ_PTR(pc.cfg.fsname, NULL);
		ovl_config_free(&pc.cfg);
	}
}

static void test_supported_features(void)
{
	static const char *const cases[] = {
	    "redirect_dir=off", "redirect_dir=nofollow",
	    "index=off",	"index=on",
	    "metacopy=off",	"metacopy=on",
	    "xino=off",		"xino=auto",
	    "xino=on",		"uuid=auto",
	    "uuid=null",	"uuid=off",
	    "nfs_export=off",	"verity=off",
	    "passthrough=on",	"passthrough=off",
	    "io_uring=on",	"io_uring=off",
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parse_case pc;

		parse(&pc, cases[i]);
		if (!CHECK_EQ_INT(pc.rc, 0))
			fprintf(stderr, "    option: %s, message: %s\n",
				cases[i], pc.err.msg);
		CHECK_EQ_INT(pc.cfg.mount_flags, 0);
		ovl_config_free(&pc.cfg);
	}
}

static void test_feature_fields(void)
{
	struct parse_case pc;

	parse(&pc, "redirect_dir=on");
	CHECK_EQ_INT(pc.cfg.redirect, OVL_REDIRECT_ON);
	ovl_config_free(&pc.cfg);
	parse(&pc, "redirect_dir=follow");
	CHECK_EQ_INT(pc.cfg.redirect, OVL_REDIRECT_FOLLOW);
	ovl_config_free(&pc.cfg);
	parse(&pc, "redirect_dir=nofollow");
	CHECK_EQ_INT(pc.cfg.redirect, OVL_REDIRECT_NOFOLLOW);
	ovl_config_free(&pc.cfg);

	parse(&pc, "redirect_dir=nofollow,redirect_dir=off");
	CHECK_EQ_INT(pc.cfg.redirect, OVL_REDIRECT_OFF);
	ovl_config_free(&pc.cfg);

	parse(&pc, "passthrough=on");
	CHECK(pc.cfg.passthrough);
	ovl_config_free(&pc.cfg);

	memset(&pc, 0, sizeof(pc));
	pc.cfg.passthrough = true;
	pc.rc = ovl_parse_options(&pc.cfg, "passthrough=off", &pc.err);
	CHECK_EQ_INT(pc.rc, 0);
	CHECK(!pc.cfg.passthrough);
	ovl_config_free(&pc.cfg);
}

/* Values overlayfs accepts but lamina does not implement. */
static void test_unsupported_features(void)
{
	static const struct {
		const char *option;
		const char *replacement;
	} cases[] = {
	    {"uuid=on", "uuid=auto"},
	    {"nfs_export=on", "nfs_export=off"},
	    {"verity=on", "verity=off"},
	    {"verity=require", "verity=off"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parse_case pc;

		parse(&pc, cases[i].option);
		if (!CHECK_EQ_INT(pc.rc, -EOPNOTSUPP))
			fprintf(stderr, "    option: %s\n", cases[i].option);
		CHECK_CONTAINS(pc.err.msg, cases[i].option);
		CHECK_CONTAINS(pc.err.msg, "not supported");
		CHECK_CONTAINS(pc.err.msg, cases[i].replacement);
		ovl_config_free(&pc.cfg);
	}
}

static void test_invalid_feature_values(void)
{
	static const struct {
		const char *option;
		const char *key;
		const char *value;
	} cases[] = {
	    {"redirect_dir=yes", "redirect_dir", "'yes'"},
	    {"redirect_dir=", "redirect_dir", "''"},
	    {"index=maybe", "index", "'maybe'"},
	    {"metacopy=1", "metacopy", "'1'"},
	    {"xino=auto2", "xino", "'auto2'"},
	    {"uuid=random", "uuid", "'random'"},
	    {"nfs_export=ON", "nfs_export", "'ON'"},
	    {"verity=Off", "verity", "'Off'"},
	    {"passthrough=yes", "passthrough", "'yes'"},
	    {"passthrough=1", "passthrough", "'1'"},
	    {"passthrough=", "passthrough", "''"},
	    {"io_uring=auto", "io_uring", "'auto'"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parse_case pc;

		parse(&pc, cases[i].option);
		if (!CHECK_EQ_INT(pc.rc, -EINVAL))
			fprintf(stderr, "    option: %s\n", cases[i].option);
		CHECK_CONTAINS(pc.err.msg, "invalid value");
		CHECK_CONTAINS(pc.err.msg, cases[i].key);
		CHECK_CONTAINS(pc.err.msg, cases[i].value);
		ovl_config_free(&pc.cfg);
	}
}

static void test_unknown_options(void)
{
	static const struct {
		const char *opts;
		const char *named;
	} cases[] = {
	    {"bogus", "'bogus'"},
	    {"bogus=1", "'bogus=1'"},
	    {"lowerdir", "'lowerdir'"},
	    {"comment", "'comment'"},
	    {"Ro", "'Ro'"},
	    {"ro,frobnicate,nodev", "'frobnicate'"},
	    {"lowerdir+=/a", "'lowerdir+=/a'"},
	    {"userxattr=on", "'userxattr=on'"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parse_case pc;

		parse(&pc, cases[i].opts);
		if (!CHECK_EQ_INT(pc.rc, -EINVAL))
			fprintf(stderr, "    options: %s\n", cases[i].opts);
		CHECK_CONTAINS(pc.err.msg, "unknown option");
		CHECK_CONTAINS(pc.err.msg, cases[i].named);
		ovl_config_free(&pc.cfg);
	}

	/* Parsing stops at the first error: nodev after it is not applied. */
	{
		struct parse_case pc;

		parse(&pc, "ro,frobnicate,nodev");
		CHECK_EQ_INT(pc.cfg.mount_flags, MS_RDONLY);
		ovl_config_free(&pc.cfg);
	}
}

static void test_boolean_options(void)
{
	struct parse_case pc;

	parse(&pc, "userxattr");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK(pc.cfg.userxattr);
	CHECK(!pc.cfg.volatile_mount);
	CHECK(!pc.cfg.allow_other);
	ovl_config_free(&pc.cfg);

	parse(&pc, "volatile");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK(pc.cfg.volatile_mount);
	CHECK(!pc.cfg.userxattr);
	ovl_config_free(&pc.cfg);

	parse(&pc, "allow_other");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK(pc.cfg.allow_other);
	CHECK_EQ_INT(pc.cfg.mount_flags, 0);
	ovl_config_free(&pc.cfg);
}

static void test_fsname(void)
{
	struct parse_case pc;

	parse(&pc, "fsname=overlay");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK_EQ_STR(pc.cfg.fsname, "overlay");
	ovl_config_free(&pc.cfg);

	/* The last fsname wins, and the sanitizer build catches a leaked copy.
	 */
	parse(&pc, "fsname=first,fsname=second");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK_EQ_STR(pc.cfg.fsname, "second");
	ovl_config_free(&pc.cfg);

	/* mount(2) rejects an empty source, so the option does too. */
	parse(&pc, "fsname=");
	CHECK_EQ_INT(pc.rc, -EINVAL);
	CHECK_CONTAINS(pc.err.msg, "fsname");
	ovl_config_free(&pc.cfg);

	/*
	 * A backslash escapes the next character in every option value, as
	 * it does for upperdir and lowerdir, so the escape must not reach
	 * the source name given to mount(2).
	 */
	parse(&pc, "fsname=my\\,overlay");
	CHECK_EQ_INT(pc.rc, 0);
	CHECK_EQ_STR(pc.cfg.fsname, "my,overlay");
	ovl_config_free(&pc.cfg);
}

static void test_finish_requires_lowerdir(void)
{
	struct parse_case pc;
	int rc;

	parse(&pc, "upperdir=/u,workdir=/w");
	CHECK_EQ_INT(pc.rc, 0);
	rc = ovl_config_finish(&pc.cfg, &pc.err);
	CHECK_EQ_INT(rc, -EINVAL);
	CHECK_CONTAINS(pc.err.msg, "no lowerdir");
	ovl_config_free(&pc.cfg);

	parse(&pc, "");
	rc = ovl_config_finish(&pc.cfg, &pc.err);
	CHECK_EQ_INT(rc, -EINVAL);
	CHECK_CONTAINS(pc.err.msg, "lowerdir");
	ovl_config_free(&pc.cfg);
}

static void test_finish_upper_without_work(void)
{
	struct parse_case pc;
	int rc;

	parse(&pc, "lowerdir=/l,upperdir=/the/upper");
	CHECK_EQ_INT(pc.rc, 0);
	rc = ovl_config_finish(&pc.cfg, &pc.err);
	CHECK_EQ_INT(rc, -EINVAL);
	CHECK_CONTAINS(pc.err.msg, "/the/upper");
	CHECK_CONTAINS(pc.err.msg, "without workdir");
	ovl_config_free(&pc.cfg);

	parse(&pc, "lowerdir=/l,workdir=/the/work");
	CHECK_EQ_INT(pc.rc, 0);
	rc = ovl_config_finish(&pc.cfg, &pc.err);
	CHECK_EQ_INT(rc, -EINVAL);
	CHECK_CONTAINS(pc.err.msg, "/the/work");
	CHECK_CONTAINS(pc.err.msg, "without upperdir");
	ovl_config_free(&pc.cfg);
}

static void test_finish_read_only(void)
{
	struct parse_case pc;
	int rc;

	/* Without an upper layer the mount is read-only, even with rw. */
	parse(&pc, "lowerdir=/a:/b,rw,nodev");
	CHECK_EQ_INT(pc.rc, 0);
	rc = ovl_config_finish(&pc.cfg, &pc.err);
	CHECK_EQ_INT(rc, 0);
	CHECK(pc.cfg.read_only);
	CHECK_EQ_INT(pc.cfg.mount_flags, MS_RDONLY | MS_NODEV);
	ovl_config_free(&pc.cfg);

	parse(&pc, "lowerdir=/l,upperdir=/u,workdir=/w");
	CHECK_EQ_INT(pc.rc, 0);
	rc = ovl_config_finish(&pc.cfg, &pc.err);
	CHECK_EQ_INT(rc, 0);
	CHECK(!pc.cfg.read_only);
	CHECK_EQ_INT(pc.cfg.mount_flags, 0);
	ovl_config_free(&pc.cfg);

	parse(&pc, "lowerdir=/l,upperdir=/u,workdir=/w,ro");
	CHECK_EQ_INT(pc.rc, 0);
	rc = ovl_config_finish(&pc.cfg, &pc.err);
	CHECK_EQ_INT(rc, 0);
	CHECK(pc.cfg.read_only);
	CHECK_EQ_INT(pc.cfg.mount_flags, MS_RDONLY);
	ovl_config_free(&pc.cfg);
}

static void test_config_free_zeroes(void)
{
	struct parse_case pc;

	parse(&pc, "lowerdir=/a:/b,upperdir=/u,workdir=/w,fsname=f");
	CHECK_EQ_INT(pc.rc, 0);
	pc.cfg.mountpoint = strdup("/mnt");
	ovl_config_free(&pc.cfg);
	CHECK_EQ_INT(pc.cfg.nlower, 0);
	CHECK_EQ_PTR(pc.cfg.lowerdirs, NULL);
	CHECK_EQ_PTR(pc.cfg.upperdir, NULL);
	CHECK_EQ_PTR(pc.cfg.workdir, NULL);
	CHECK_EQ_PTR(pc.cfg.mountpoint, NULL);
	CHECK_EQ_PTR(pc.cfg.fsname, NULL);

	/* A second free of the zeroed config is harmless. */
	ovl_config_free(&pc.cfg);
}

int main(void)
{
	RUN_TEST(test_lowerdir_order);
	RUN_TEST(test_lowerdir_escapes);
	RUN_TEST(test_lowerdir_invalid);
	RUN_TEST(test_lowerdir_data_only);
	RUN_TEST(test_metacopy_needs_redirects);
	RUN_TEST(test_lowerdir_layer_limit);
	RUN_TEST(test_upper_and_work);
	RUN_TEST(test_upper_and_work_invalid);
	RUN_TEST(test_options_in_several_calls);
	RUN_TEST(test_empty_options);
	RUN_TEST(test_mount_flags);
	RUN_TEST(test_mount_flags_order);
	RUN_TEST(test_ignored_options);
	RUN_TEST(test_supported_features);
	RUN_TEST(test_feature_fields);
	RUN_TEST(test_unsupported_features);
	RUN_TEST(test_invalid_feature_values);
	RUN_TEST(test_unknown_options);
	RUN_TEST(test_boolean_options);
	RUN_TEST(test_fsname);
	RUN_TEST(test_finish_requires_lowerdir);
	RUN_TEST(test_finish_upper_without_work);
	RUN_TEST(test_finish_read_only);
	RUN_TEST(test_config_free_zeroes);
	return check_summary();
}
