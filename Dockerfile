# syntax=docker/dockerfile:1.7
# Release image: build with cached cargo registry and target dirs (BuildKit),
# run on distroless as a numeric non-root user. No shell in the final image;
# Kubernetes probes do the health checking.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# h2 with one patch (vendor/README.md), through [patch.crates-io].
COPY vendor ./vendor
COPY proto ./proto
# Migrations and the bootstrap scripts (`precinct bootstrap-files`) are
# embedded in the binary at compile time.
COPY sql/migrations ./sql/migrations
COPY sql/bootstrap.sql ./sql/
COPY scripts/configure-openbao.sh scripts/bootstrap-db.sh ./scripts/
COPY src ./src
# Build identity (.git is not in the context):
#   docker build --build-arg PRECINCT_GIT_COMMIT="$(git rev-parse HEAD)" \
#                --build-arg PRECINCT_BUILD_DATE="$(date -u +%FT%TZ)" .
ARG PRECINCT_GIT_COMMIT=unknown
ARG PRECINCT_BUILD_DATE=unknown
# No dev-agent feature: the release image cannot mint SVIDs.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/precinct /precinct

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /precinct /usr/local/bin/precinct
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/precinct"]
CMD ["serve"]
