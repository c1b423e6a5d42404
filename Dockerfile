# syntax=docker/dockerfile:1
# One image for every component: `gpu-autoscaler webhook|extender|scaler|agent|certs|...`.
#
#   docker build -t ghcr.io/gpu-autoscaler/gpu-autoscaler:0.1.0 .
#
# Build stage: the same Debian release as the runtime (bookworm), so the binary links against
# the glibc it will run with.
FROM rust:1-bookworm AS build
WORKDIR /src
# Everything the workspace needs to build; .dockerignore keeps target/ and docs out.
COPY . .
# Cache the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gpu-autoscaler \
 && install -D -m 0755 target/release/gpu-autoscaler /out/gpu-autoscaler

# Runtime: distroless with glibc and libgcc (what a Rust binary needs), no shell, no package
# manager, and the nonroot user (65532) that the chart's securityContext also asks for.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gpu-autoscaler /usr/local/bin/gpu-autoscaler
USER nonroot:nonroot
# Webhook 8443 (+8081 probes), extender 8888, scaler 8080, agent 9400.
EXPOSE 8443 8081 8888 8080 9400
ENTRYPOINT ["/usr/local/bin/gpu-autoscaler"]
