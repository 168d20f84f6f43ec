#!/usr/bin/env bash
# nginx in front of gunicorn (sync workers, over a unix socket): the classic
# Django deployment, as one process group that bench/run.py can start and stop.
# nginx serves /static/ from STATIC_DIR (when given) with `expires max`, and
# proxies everything else. Its files live in a temp dir removed on exit.
#
# Usage: nginx_gunicorn.sh HOST PORT WORKERS APP [STATIC_DIR]   (run in the app's directory)
set -euo pipefail
PATH="$PATH:/usr/sbin"
host=$1 port=$2 workers=$3 app=$4 static=${5:-}
dir=$(mktemp -d /tmp/tandem-bench-nginx-XXXXXX)
trap 'rm -rf "$dir"' EXIT
trap 'exit 0' TERM INT
chmod 755 "$dir"

static_location=""
if [ -n "$static" ]; then
    static_location="location /static/ { alias $(realpath "$static")/; expires max; }"
fi
user_line=""
[ "$(id -u)" -ne 0 ] || user_line="user root;"  # workers must reach the socket and files

cat > "$dir/nginx.conf" <<CONF
$user_line
worker_processes auto;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream app { server unix:$dir/gunicorn.sock; }
    server {
        listen $host:$port;
        $static_location
        location / {
            proxy_pass http://app;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
CONF

gunicorn -w "$workers" -b "unix:$dir/gunicorn.sock" "$app" &
nginx -c "$dir/nginx.conf" -p "$dir" -e stderr -g 'daemon off;' &
wait -n  # either one exiting ends the pair
exit 1
