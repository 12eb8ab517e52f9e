"""An alias and its generations: the types every backend's alias book shares
(`generations`), the books by URI scheme (`aliases`), the pointer file of path-based stores
(`pointer`), and the rebuild lease that lets one rebuild run per alias at a time (`leases`,
held as a lock file, `file_lease`, or as a timed record on a server, `timed_lease`)."""
