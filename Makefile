.PHONY: rpm clean-rpm

# Source RPM and noarch RPM into rpmbuild/SRPMS/ and rpmbuild/RPMS/noarch/
# (make rpm RPM_TOPDIR=DIR builds into another folder).  Without the
# Fedora/RHEL Python macros it builds with the project's .venv (scripts/setup).
RPM_TOPDIR ?= rpmbuild

rpm:
	packaging/rpm/build.sh $(RPM_TOPDIR)

clean-rpm:
	rm -rf rpmbuild
