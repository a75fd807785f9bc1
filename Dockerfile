# syntax=docker/dockerfile:1
# One image for the services (loader, inference, HTTP gateway) and the operator CLI; docker-compose.yml and
# deploy/k8s pick the binary with the entrypoint. The image is distroless
# (no shell): health checks run `corelm health ADDR`, the CLI in the image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
# .git is not in the build context, so the binaries carry no VCS
# information; --version then shows this revision when it is given:
#   CORELM_REVISION=$(git rev-parse HEAD) docker compose build
ARG CORELM_REVISION=""
RUN --mount=type=cache,target=/root/.cache/go-build \
    for bin in ./services/loader ./services/inference ./services/gateway ./cmd/corelm; do \
      go build -trimpath -ldflags="-s -X github.com/corelm/corelm/internal/version.revision=${CORELM_REVISION}" \
        -o /out/$(basename $bin) $bin || exit 1; \
    done

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/loader /out/inference /out/gateway /out/corelm /usr/local/bin/
USER nonroot
# loader: 7070, inference: 7071, gateway (HTTP): 8080
# (CORELM_LOADER_LISTEN / CORELM_LISTEN / CORELM_GATEWAY_LISTEN).
EXPOSE 7070 7071 8080
ENTRYPOINT ["/usr/local/bin/inference"]
