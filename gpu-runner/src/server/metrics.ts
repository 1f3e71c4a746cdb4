import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Prometheus metrics, named as vLLM names them where the meaning is the same. */
export function createMetrics(modelName: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ model_name: modelName });
  // process_resident_memory_bytes and friends: the load test checks memory stays bounded.
  collectDefaultMetrics({ register: registry });
  const latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
  const m = {
    registry,
    ttft: new Histogram({
      name: "vllm:time_to_first_token_seconds",
      help: "Time from request arrival to the first generated token.",
      buckets: latency,
      registers: [registry],
    }),
    itl: new Histogram({
      name: "vllm:inter_token_latency_seconds",
      help: "Time between consecutive generated tokens of a request.",
      buckets: latency,
      registers: [registry],
    }),
    queueTime: new Histogram({
      name: "vllm:request_queue_time_seconds",
      help: "Time a request waited for admission.",
      buckets: latency,
      registers: [registry],
    }),
    e2e: new Histogram({
      name: "vllm:e2e_request_latency_seconds",
      help: "Request latency from arrival to the last event.",
      buckets: latency,
      registers: [registry],
    }),
    running: new Gauge({
      name: "vllm:num_requests_running",
      help: "Requests generating now.",
      registers: [registry],
    }),
    waiting: new Gauge({
      name: "vllm:num_requests_waiting",
      help: "Requests waiting for admission.",
      registers: [registry],
    }),
    promptTokens: new Counter({
      name: "vllm:prompt_tokens_total",
      help: "Prefilled prompt tokens.",
      registers: [registry],
    }),
    generationTokens: new Counter({
      name: "vllm:generation_tokens_total",
      help: "Generated tokens (routing tokens included, spliced queries not).",
      registers: [registry],
    }),
    requests: new Counter({
      name: "vllm:request_success_total",
      help: "Finished requests by finish reason.",
      labelNames: ["finished_reason"],
      registers: [registry],
    }),
    rejected: new Counter({
      name: "visionllm:requests_rejected_total",
      help: "Requests refused before generation, by error code.",
      labelNames: ["code"],
      registers: [registry],
    }),
    decoder: new Histogram({
      name: "visionllm:decoder_latency_seconds",
      help: "Task decoder latency per super-link call.",
      labelNames: ["task"],
      buckets: latency,
      registers: [registry],
    }),
    batchSize: new Histogram({
      name: "visionllm:decode_batch_size",
      help: "Sequences per batched decode step.",
      buckets: [1, 2, 4, 8, 16, 32],
      registers: [registry],
    }),
    cacheHits: new Counter({
      name: "visionllm:image_cache_hits_total",
      help: "Image feature cache hits.",
      registers: [registry],
    }),
    cacheMisses: new Counter({
      name: "visionllm:image_cache_misses_total",
      help: "Image feature cache misses.",
      registers: [registry],
    }),
    graphBatch: new Histogram({
      name: "visionllm:graph_batch_size",
      help: "Calls served per run of a non-LLM graph (concurrent encoders, decoders, generator steps).",
      labelNames: ["graph"],
      buckets: [1, 2, 4, 8, 16],
      registers: [registry],
    }),
    prefixQueries: new Counter({
      name: "vllm:prefix_cache_queries_total",
      help: "Prompt tokens looked up in the prefix cache.",
      registers: [registry],
    }),
    prefixHits: new Counter({
      name: "vllm:prefix_cache_hits_total",
      help: "Prompt tokens whose KV came from the prefix cache.",
      registers: [registry],
    }),
  };
  return m;
}
export type Metrics = ReturnType<typeof createMetrics>;
