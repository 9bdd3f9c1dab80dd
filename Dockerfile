# Multi-stage build of cmd/presence-server: a static binary on distroless.
#   docker build -t presence-server .
#   docker run --rm -p 3000:3000 -e REDIS_URL=redis://redis:6379/0 presence-server
# Without REDIS_URL the server runs on its embedded in-process Redis (development only).

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so editing the code does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/presence-server ./cmd/presence-server

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/presence-server /presence-server
EXPOSE 3000
USER nonroot:nonroot
ENTRYPOINT ["/presence-server"]
