# syntax=docker/dockerfile:1
#
# FleetForge images (see docs/security-supply-chain.md).
#
#   docker build -t fleetforge-operator .                  # the operator (default target)
#   docker build --target gateway -t fleetforge-gateway .  # the player gateway
#   docker build --target cell-sim -t fleetforge/cell-simulator:0.1.0 .   # example cell
#
# Every binary is fully static (glibc with crt-static; TLS is rustls + ring, no
# OpenSSL), so they run on distroless/static: no shell, no package manager, no
# libc, user 65532 (nonroot), the uid deploy/operator/deployment.yaml and
# deploy/gateway/deployment.yaml run as.

# Base images are pinned by tag. To pin a digest as well, append the one that
#   docker buildx imagetools inspect <image:tag>
# reports (`FROM <image:tag>@sha256:<digest>`) and let Dependabot or Renovate
# keep it current.

# ---------------------------------------------------------------------------
# The toolchain CI and developers use (the workspace needs Rust 1.89 or newer),
# on Debian 12 like the runtime image.
FROM rust:1.95.0-slim-bookworm AS toolchain
WORKDIR /src
# crt-static links glibc statically. An explicit --target (set in each build
# command) keeps these flags off build scripts and proc macros, which must stay
# dynamic.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never

# ---------------------------------------------------------------------------
# The workspace reduced to its manifests, the lockfile and a stub for the root
# file of every library, binary, benchmark and build script: the files, and so
# the cache key of the dependency layer below, change only when a manifest, the
# lockfile or the set of such targets does, not when a source file does. Tests
# and examples get no stub (cargo finds them by itself, so they need not exist):
# adding one does not rebuild the dependencies. A `[[test]]` or `[[example]]`
# declared in a manifest would need one.
FROM toolchain AS manifests
COPY . .
RUN cargo metadata --no-deps --format-version 1 --offline > /tmp/metadata.json \
 && grep -o '"kind":\["[^"]*"[^]]*\][^}]*"src_path":"[^"]*"' /tmp/metadata.json \
    | sed 's/^"kind":\["\([^"]*\)".*"src_path":"\([^"]*\)"$/\1 \2/' \
    | grep -v -E '^(test|example) ' | cut -d' ' -f2- > /tmp/stubs \
 && test -s /tmp/stubs \
 && find . -type f ! -name Cargo.toml ! -name Cargo.lock ! -path './.cargo/*' -delete \
 && find . -mindepth 1 -type d -empty -delete \
 && while read -r path; do \
      mkdir -p "$(dirname "$path")" \
      && printf '//! Dependency-layer stub.\n#[allow(dead_code)]\nfn main() {}\n' > "$path"; \
    done < /tmp/stubs

# ---------------------------------------------------------------------------
# Every third-party dependency of the operator, compiled once per lockfile; the
# stubs (at this point every .rs file) go again before the real sources come in.
FROM toolchain AS deps
COPY --from=manifests /src /src
RUN target="$(uname -m)-unknown-linux-gnu" \
 && cargo build --release --locked --target "$target" -p fleetforge-operator \
 && find . -path ./target -prune -o -name '*.rs' -exec rm -f {} +

# ---------------------------------------------------------------------------
FROM deps AS operator-build
COPY . .
# COPY keeps the context's modification times, which can be older than the stub
# builds above: touch the sources so cargo rebuilds every workspace crate.
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
 && target="$(uname -m)-unknown-linux-gnu" \
 && cargo build --release --locked --target "$target" -p fleetforge-operator \
 && mkdir -p /out \
 && cp "target/$target/release/fleetforge-operator" /out/ \
 && if readelf -l /out/fleetforge-operator | grep -q INTERP; then \
      echo "fleetforge-operator is dynamically linked" >&2; exit 1; \
    fi \
 && /out/fleetforge-operator --version

# ---------------------------------------------------------------------------
# Optional: the example game server, for trying the operator out.
FROM deps AS cell-sim-build
COPY --from=manifests /src /src
RUN target="$(uname -m)-unknown-linux-gnu" \
 && cargo build --release --locked --target "$target" -p fleetforge-examples \
 && find . -path ./target -prune -o -name '*.rs' -exec rm -f {} +
COPY . .
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
 && target="$(uname -m)-unknown-linux-gnu" \
 && cargo build --release --locked --target "$target" -p fleetforge-examples --bin cell-sim \
 && mkdir -p /out \
 && cp "target/$target/release/cell-sim" /out/ \
 && if readelf -l /out/cell-sim | grep -q INTERP; then \
      echo "cell-sim is dynamically linked" >&2; exit 1; \
    fi \
 && /out/cell-sim --version

FROM gcr.io/distroless/static-debian12:nonroot AS cell-sim
COPY --from=cell-sim-build /out/cell-sim /usr/local/bin/cell-sim
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cell-sim"]

# ---------------------------------------------------------------------------
# The player gateway, built like the operator: its own dependency layer (it
# shares most crates with the operator, but not all), then the sources.
FROM deps AS gateway-build
COPY --from=manifests /src /src
RUN target="$(uname -m)-unknown-linux-gnu" \
 && cargo build --release --locked --target "$target" -p fleetforge-gateway \
 && find . -path ./target -prune -o -name '*.rs' -exec rm -f {} +
COPY . .
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
 && target="$(uname -m)-unknown-linux-gnu" \
 && cargo build --release --locked --target "$target" -p fleetforge-gateway --bin fleetforge-gateway \
 && mkdir -p /out \
 && cp "target/$target/release/fleetforge-gateway" /out/ \
 && if readelf -l /out/fleetforge-gateway | grep -q INTERP; then \
      echo "fleetforge-gateway is dynamically linked" >&2; exit 1; \
    fi \
 && /out/fleetforge-gateway --version

FROM gcr.io/distroless/static-debian12:nonroot AS gateway
LABEL org.opencontainers.image.title="fleetforge-gateway" \
      org.opencontainers.image.description="The FleetForge player gateway: tells game clients which cell of a world serves a position." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/fleetforge/fleetforge"
COPY --from=gateway-build /out/fleetforge-gateway /usr/local/bin/fleetforge-gateway
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# 8090: players; 8091: /healthz, /readyz, /metrics.
EXPOSE 8090 8091
ENTRYPOINT ["/usr/local/bin/fleetforge-gateway"]

# ---------------------------------------------------------------------------
# The operator image: the last stage, so the default target. distroless/static
# carries only CA certificates, tzdata, and /etc/passwd entries for root and
# nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot AS operator
LABEL org.opencontainers.image.title="fleetforge-operator" \
      org.opencontainers.image.description="The FleetForge operator: turns WorldSpecs into cell Pods and reports their status." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/fleetforge/fleetforge"
COPY --from=operator-build /out/fleetforge-operator /usr/local/bin/fleetforge-operator
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/fleetforge-operator"]
