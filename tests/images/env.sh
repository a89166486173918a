# Sourced: points buildah and podman at the tests' own container storage and settings under
# IMAGES_DIR ($1, default build/images): vfs storage, runc, no systemd (cgroupfs, events to a
# file), nothing written to /var/lib/containers. tests/images/test_images.py sets the same.
images_dir=$(mkdir -p "${1:-build/images}" && cd "${1:-build/images}" && pwd)
cat >"$images_dir/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$images_dir/storage"
runroot = "$images_dir/run"
EOF
cat >"$images_dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$images_dir/events.log"
tmp_dir = "$images_dir/tmp"
volume_path = "$images_dir/volumes"
EOF
export CONTAINERS_STORAGE_CONF="$images_dir/storage.conf"
export CONTAINERS_CONF="$images_dir/containers.conf"
export BUILDAH_ISOLATION=chroot
