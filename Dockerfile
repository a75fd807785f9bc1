# syntax=docker/dockerfile:1
# Both services in one image; docker-compose.yml picks the binary.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags=-s -o /out/loader ./services/loader && \
    go build -trimpath -ldflags=-s -o /out/inference ./services/inference

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/loader /out/inference /usr/local/bin/
USER nonroot
# loader: 7070, inference: 7071 (set with CORELM_LOADER_LISTEN / CORELM_LISTEN).
EXPOSE 7070 7071
ENTRYPOINT ["/usr/local/bin/inference"]
