// Renders cases.json with @huggingface/jinja, an independent Jinja
// implementation, into <name>.txt: the expected prompts of TestToolTemplates.
// Run from this directory: HF_JINJA=/path/to/node_modules/@huggingface/jinja node render.cjs
const fs = require("fs");
const path = require("path");
const { Template } = require(process.env.HF_JINJA || "@huggingface/jinja");
const cases = JSON.parse(fs.readFileSync("cases.json", "utf8"));
for (const c of cases) {
  const src = fs.readFileSync(path.join("..", c.template + ".jinja"), "utf8");
  const messages = c.messages.map((m) => {
    const out = { role: m.role, content: m.content };
    if (m.tool_calls) {
      out.tool_calls = m.tool_calls.map((tc) => ({
        id: tc.id, type: "function", function: { name: tc.name, arguments: JSON.parse(tc.arguments) },
      }));
    }
    if (m.tool_call_id) out.tool_call_id = m.tool_call_id;
    if (m.name) out.name = m.name;
    return out;
  });
  const vars = { messages, add_generation_prompt: !!c.add_generation_prompt, bos_token: c.bos_token || "", eos_token: "" };
  if (c.tools) {
    vars.tools = c.tools.map((t) => {
      const fn = { name: t.name, description: t.description };
      if (t.parameters) fn.parameters = JSON.parse(t.parameters);
      return { type: "function", function: fn };
    });
  }
  fs.writeFileSync(c.name + ".txt", new Template(src).render(vars));
}
