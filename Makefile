.PHONY: rpm clean-rpm

# Source RPM and noarch RPM into rpmbuild/SRPMS/ and rpmbuild/RPMS/noarch/
# (packaging/rpm/build.sh DIR builds into another folder).
rpm:
	packaging/rpm/build.sh rpmbuild

clean-rpm:
	rm -rf rpmbuild
