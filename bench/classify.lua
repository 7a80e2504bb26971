-- wrk script: POST one MNIST digit to /classify per request.
-- The body comes from the file named by the env var FFD_CLASSIFY_BODY.
local f = assert(io.open(os.getenv("FFD_CLASSIFY_BODY"), "r"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  io.write(string.format("requests/s %.0f\n", summary.requests / (summary.duration / 1e6)))
  io.write(string.format("p50_ms %.3f p99_ms %.3f max_ms %.3f\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("errors %d non2xx %d\n",
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
