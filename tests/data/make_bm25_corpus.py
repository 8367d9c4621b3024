"""Writes ``bm25_corpus.jsonl``: generated passages (English, Chinese, mixed) and queries for the
BM25 parity test. Generated, so the data is ours; seeded, so running it again writes the same
file. Words follow a Zipf law so that term frequencies look like real text (a few very common
terms, a long tail of rare ones), and passage lengths vary so that length normalisation matters.

    python tests/data/make_bm25_corpus.py
"""

import json
import random
from pathlib import Path

ENGLISH_TEXT = """
cell cells protein proteins gene genes expression patient patients study studies clinical trial
trials treatment treatments therapy cancer tumor tumour growth factor factors receptor receptors
signal signaling pathway pathways mouse mice model models human humans disease diseases risk
increased decreased level levels effect effects response responses function functions activity
role analysis data results result method methods sample samples blood tissue tissues brain heart
liver kidney lung bone muscle skin immune infection infections virus viral bacteria bacterial
antibody antibodies vaccine vaccines drug drugs dose doses acid acids membrane mitochondria
mitochondrial insulin glucose obesity diabetes vitamin deficiency stress oxidative inflammation
inflammatory chronic acute age aging children women men population cohort mortality survival
association associated higher lower significant significantly observed measured compared control
controls group groups rate rates time week weeks year years day days mechanism mechanisms
molecular structure binding complex complexes enzyme enzymes inhibitor inhibitors inhibition
mutation mutations dna rna sequence sequencing genome genomic transcription regulation regulatory
stem differentiation development developmental neurons neuronal synaptic memory learning sleep
exercise diet dietary fat cholesterol pressure hypertension stroke vascular endothelial oxygen
hypoxia metabolism metabolic energy lipid lipids calcium sodium potassium iron zinc copper
resistance sensitivity toxicity safety efficacy outcome outcomes hospital care health public
screening diagnosis diagnostic marker markers biomarker biomarkers imaging scan ultrasound
surgery surgical transplant graft pain fever cough asthma allergy allergic smoking alcohol
pregnancy birth infant maternal placenta hormone hormones estrogen testosterone thyroid adrenal
"""
ENGLISH = ENGLISH_TEXT.split()

CHINESE = (
    "患者治疗疾病检查症状医生医院药物剂量血压血糖心脏肝脏肾脏肺部骨骼肌肉皮肤免疫感染病毒细菌"
    "疫苗抗体蛋白基因细胞组织器官手术麻醉疼痛发热咳嗽哮喘过敏吸烟饮酒妊娠分娩婴儿儿童老年女性"
    "男性人群风险增加减少水平作用效果反应功能活性分析数据结果方法样本血液诊断影像超声移植慢性"
    "急性炎症代谢能量脂肪胆固醇高血压中风血管氧气营养维生素缺乏运动饮食睡眠记忆学习压力年假报销"
    "制度员工手册规定申请审批流程发票差旅培训考核工资福利休假加班合同"
)


def zipf_choice(rng: random.Random, items: list[str], s: float = 1.07) -> str:
    weights = [1 / (rank**s) for rank in range(1, len(items) + 1)]
    return rng.choices(items, weights)[0]


def english(rng: random.Random, n: int, words: list[str]) -> str:
    return " ".join(zipf_choice(rng, words) for _ in range(n)).capitalize() + "."


def chinese(rng: random.Random, n: int, chars: list[str]) -> str:
    # Runs of 2-4 characters copied from the list (whose neighbours form words), Zipf-picked.
    out = []
    while len(out) < n:
        start = int(zipf_choice(rng, [str(i) for i in range(len(chars) - 4)]))
        out.extend(chars[start : start + rng.randint(2, 4)])
    return "".join(out[:n]) + "。"


def main() -> None:
    rng = random.Random(20241126)
    words = ENGLISH[:]
    rng.shuffle(words)  # Zipf rank independent of the list's order
    chars = list(CHINESE)  # in order: runs copied from it are real words (患者, 治疗, ...)
    passages = []
    for i in range(300):
        kind = "en" if i % 10 < 6 else "zh" if i % 10 < 9 else "mixed"
        n = rng.choice([8, 15, 30, 60, 120]) + rng.randint(0, 10)
        if kind == "en":
            text = english(rng, n, words)
        elif kind == "zh":
            text = chinese(rng, n, chars)
        else:
            text = english(rng, n // 2, words) + " " + chinese(rng, n // 2, chars)
        passages.append({"id": f"p{i:03d}", "kind": kind, "text": text})
    queries = [{"id": f"q{i:02d}", "text": english(rng, rng.randint(1, 8), words)} for i in range(30)]
    queries += [{"id": f"q{i:02d}", "text": chinese(rng, rng.randint(2, 12), chars)} for i in range(30, 50)]
    queries += [  # a repeated term, an unknown one, both scripts
        {"id": "q50", "text": "insulin insulin glucose"},
        {"id": "q51", "text": "unknownword protein"},
        {"id": "q52", "text": "vitamin deficiency 维生素缺乏"},
    ]
    out = Path(__file__).with_name("bm25_corpus.jsonl")
    with out.open("w", encoding="utf-8") as f:
        for row in passages:
            f.write(json.dumps({"type": "passage", **row}, ensure_ascii=False) + "\n")
        for row in queries:
            f.write(json.dumps({"type": "query", **row}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
