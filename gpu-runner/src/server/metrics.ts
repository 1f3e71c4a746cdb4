import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Prometheus metrics, named as vLLM names them where the meaning is the same. */
export function createMetrics(modelName: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ model_name: modelName });
  // process_resident_memory_bytes and friends: the load test checks memory stays bounded.
  collectDefaultMetrics({ register: registry });
  const latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
  const registers = [registry];
  const seconds = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Histogram<L>({ name, help, buckets: latency, labelNames, registers });
  const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers });
  const gauge = (name: string, help: string) => new Gauge({ name, help, registers });
  return {
    registry,
    ttft: seconds(
      "vllm:time_to_first_token_seconds",
      "Time from request arrival to the first generated token.",
    ),
    itl: seconds(
      "vllm:inter_token_latency_seconds",
      "Time between consecutive generated tokens of a request.",
    ),
    queueTime: seconds("vllm:request_queue_time_seconds", "Time a request waited for admission."),
    e2e: seconds("vllm:e2e_request_latency_seconds", "Request latency from arrival to the last event."),
    running: gauge("vllm:num_requests_running", "Requests generating now."),
    waiting: gauge("vllm:num_requests_waiting", "Requests waiting for admission."),
    promptTokens: counter("vllm:prompt_tokens_total", "Prefilled prompt tokens."),
    generationTokens: counter(
      "vllm:generation_tokens_total",
      "Generated tokens (routing tokens included, spliced queries not).",
    ),
    requests: counter("vllm:request_success_total", "Finished requests by finish reason.", [
      "finished_reason",
    ]),
    rejected: counter(
      "visionllm:requests_rejected_total",
      "Requests refused before generation, by error code.",
      ["code"],
    ),
    decoder: seconds("visionllm:decoder_latency_seconds", "Task decoder latency per super-link call.", [
      "task",
    ]),
    batchSize: new Histogram({
      name: "visionllm:decode_batch_size",
      help: "Sequences per batched decode step.",
      buckets: [1, 2, 4, 8, 16, 32],
      registers,
    }),
    cacheHits: counter("visionllm:image_cache_hits_total", "Image feature cache hits."),
    cacheMisses: counter("visionllm:image_cache_misses_total", "Image feature cache misses."),
    graphBatch: new Histogram({
      name: "visionllm:graph_batch_size",
      help: "Calls served per run of a non-LLM graph (concurrent encoders, decoders, generator steps).",
      labelNames: ["graph"],
      buckets: [1, 2, 4, 8, 16],
      registers,
    }),
    prefixQueries: counter("vllm:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache."),
    prefixHits: counter("vllm:prefix_cache_hits_total", "Prompt tokens whose KV came from the prefix cache."),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
