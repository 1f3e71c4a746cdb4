document.getElementById("app")?.append("VisionLLM");
